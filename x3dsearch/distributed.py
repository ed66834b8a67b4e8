"""Full training across machines: the one training loop of :mod:`x3dsearch.train` on Ray Train workers (DDP).

:func:`train_distributed` runs :func:`x3dsearch.train.train` in every worker of a Ray Train ``TorchTrainer``,
with a :class:`_Worker` (a :class:`~x3dsearch.train.Parallel`) that makes the loop one process of PyTorch
DistributedDataParallel (gloo on CPU, nccl on GPU). A recipe's ``batch_size`` is per worker. How batches,
shards, BatchNorm, testing, loader workers and checkpoints behave, and why: ``docs/training.md``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer, get_device
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from .checkpoint import CHECKPOINT, FileCheckpoints, check_identity
from .config import X3DConfig
from .dispatch import DispatchOptions, RayDispatcher
from .errors import UserError
from .rundir import atomic_write
from .faults import kill_rank_once, rank_kill_marker
from .workers import WorkerOptions
from .recipe import Recipe
from .train import CONFIG, IDENTITY_OMITTED, METRICS, MODEL, Parallel, TrainResult, checkpoint_identity, train

__all__ = ["RayCheckpoints", "train_distributed", "run_location", "last_checkpoint"]

_OUTPUTS = (METRICS, MODEL, CONFIG)
_SNAPSHOT_LOGGER = "ray.train.v2._internal.execution.checkpoint.checkpoint_manager"


def run_location(out_dir: Path, storage: str | None) -> tuple[str, str]:
    """The Ray Train storage (default: ``out_dir``) and run name (one per output folder) of a training."""
    out = out_dir.resolve()
    root = storage if storage and "://" in storage else str(Path(storage or out).resolve())
    return root.rstrip("/"), f"train-{hashlib.sha1(str(out).encode()).hexdigest()[:10]}"


def _registered(storage: str, name: str) -> ray.train.Result | None:
    """What Ray Train has registered of run ``name`` in ``storage`` (None before its first checkpoint)."""
    logger = logging.getLogger(_SNAPSHOT_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)  # its notice that it found the run explains Ray Train's own restore
    try:
        return ray.train.Result.from_path(f"{storage}/{name}")
    except RuntimeError:  # no such run folder, or no checkpoint registered in it yet
        return None
    finally:
        logger.setLevel(level)


def last_checkpoint(storage: str, name: str) -> Checkpoint | None:
    """The latest checkpoint Ray Train registered for run ``name`` in ``storage``, if any."""
    result = _registered(storage, name)
    return result.checkpoint if result is not None else None


class RayCheckpoints:
    """A :class:`~x3dsearch.checkpoint.CheckpointStore` through Ray Train's checkpoints.

    ``save`` is collective: every worker reports, rank 0 with its ``checkpoint.pt`` (written in its
    ``folder``). ``load`` gives every worker the last checkpoint Ray Train registered.
    """

    def __init__(self, folder: Path, chief: bool, world_size: int, path: str) -> None:
        self.folder, self.chief, self.world_size, self.path = folder, chief, world_size, path

    def load(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            if self.chief:  # the folder keeps the last checkpoint: a resumed finished run reports it again
                shutil.copyfile(Path(folder) / CHECKPOINT, self.folder / CHECKPOINT)
            return FileCheckpoints(folder).load()

    def save(self, payload: Mapping[str, Any]) -> None:
        if self.chief:
            FileCheckpoints(self.folder).save({**payload, "world_size": self.world_size})
        state = payload["state"]
        self.report({"epoch": state["epoch"], "loss": state["epoch_losses"][-1]})

    def report(self, metrics: Mapping[str, Any]) -> None:
        """Report ``metrics`` from every worker, with rank 0's folder as the checkpoint."""
        ray.train.report(dict(metrics), checkpoint=Checkpoint.from_directory(self.folder) if self.chief else None)


class _Shard(DistributedSampler):
    """A rank's share of the order a single process would read in the epoch (with one rank: that order).

    The order is drawn from the loader's generator, seeded by (seed, epoch), as a shuffling
    ``DataLoader`` draws it; ranks take every ``num_replicas``-th index after padding the order to a
    multiple of the ranks, so that all of them take the same number of steps.
    """

    def __init__(self, dataset: Dataset, world_size: int, rank: int, shuffle: bool, generator: torch.Generator) -> None:
        super().__init__(dataset, world_size, rank, shuffle=shuffle)
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else list(range(n))
        order = (order * math.ceil(self.total_size / n))[:self.total_size]
        return iter(order[self.rank::self.num_replicas])


def _sync_bn_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with SyncBatchNorm that shares every parameter and buffer with it."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model, shared))


class _Worker(Parallel):
    """One DDP process of the training loop: rank ``rank`` of ``world_size``."""

    def __init__(self, rank: int, world_size: int, device: torch.device, seed: int,
                 store: RayCheckpoints | None) -> None:
        self.rank, self.world_size, self.chief, self.device = rank, world_size, rank == 0, device
        self.seed, self._store = seed, store
        self.sampler = self._shard
        self.loader_start = "forkserver"  # a forked Ray worker can deadlock in its copied locks

    def _shard(self, dataset: Dataset, shuffle: bool, generator: torch.Generator) -> _Shard:
        return _Shard(dataset, self.world_size, self.rank, shuffle, generator)

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            return DistributedDataParallel(_sync_bn_copy(model), device_ids=[self.device], forward_sync_buffers=False)
        return DistributedDataParallel(model, forward_sync_buffers=False)

    def mean(self, loss: torch.Tensor) -> float:
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total.item() / self.world_size

    def any(self, flag: bool) -> bool:
        votes = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes.item())

    def store(self, out_dir: Path | None) -> RayCheckpoints | None:
        return self._store


@contextmanager
def _staging(name: str, rank: int) -> Iterator[Path]:
    """This worker's local folder for run ``name``, emptied first: a killed attempt leaves its own behind."""
    folder = Path(tempfile.gettempdir()) / f"x3dsearch-{name}-rank{rank}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_loop(job: Mapping[str, Any]) -> None:
    """The function every Ray Train worker runs: the training loop as one DDP process."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    multiprocessing.set_forkserver_preload(["x3dsearch.data"])  # loader workers start with it imported
    with _staging(job["name"], rank) as folder:
        store = RayCheckpoints(folder, rank == 0, world, job["where"])
        result = train(X3DConfig.from_dict(job["config"]), job["data"], Recipe.from_dict(job["recipe"]),
                       seed=job["seed"], out_dir=folder if rank == 0 else None, resume=True, device=device,
                       threads=job["threads"], init_state=job["init_state"],
                       on_epoch=kill_rank_once(job["kill_marker"], rank, world), test_split=job["test_split"],
                       parallel=_Worker(rank, world, device, job["seed"], store))
        if result.status == "failed":  # this worker alone may have failed: Ray Train stops the others
            raise RuntimeError(result.reason)
        store.report({"status": result.status})


@contextmanager
def _epoch_lines(storage: str, name: str, epochs: int, every_s: float = 5.0) -> Iterator[None]:
    """While the body runs, print a line on stderr for each epoch Ray Train registers (polled every ``every_s``)."""
    stop = threading.Event()

    def poll() -> None:
        shown = 0
        while not stop.wait(every_s):
            result = _registered(storage, name)
            metrics = (result.metrics if result is not None else None) or {}
            if metrics.get("epoch", 0) > shown:
                shown = metrics["epoch"]
                print(f"epoch {shown}/{epochs}: loss {metrics['loss']:.4f}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def train_distributed(config: X3DConfig, data: str | Path | tuple[Dataset, ...], recipe: Recipe,
                      seed: int = 0, *, out_dir: str | Path, options: WorkerOptions,
                      init_state: Mapping[str, torch.Tensor] | None = None, progress: bool = False,
                      test_split: bool = False) -> TrainResult:
    """Train ``config`` on ``options.workers`` Ray Train workers into ``out_dir``, as :func:`~.train.train` does.

    Continues from the run's last checkpoint when there is one (after a kill of the driver).
    ``out_dir`` ends with ``metrics.json``, ``model.pt`` and ``config.yaml``; a run that cannot
    finish (a worker error, more deaths than ``max_failures``) returns ``status="failed"``.
    ``progress`` prints a line on stderr for each epoch; ``test_split`` as in :func:`~.train.train`.
    """
    _check_options(options)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage, name = run_location(out, options.storage)
    where = f"the Ray Train checkpoint in {storage}/{name}"
    identity = {**checkpoint_identity(config, recipe, seed), "world_size": options.workers}
    _check_resumable(last_checkpoint(storage, name), identity, where)
    job = {"config": config.to_dict(), "recipe": recipe.to_dict(), "seed": seed, "name": name, "where": where,
           "data": str(Path(data).resolve()) if isinstance(data, (str, Path)) else data,
           "threads": max(1, int(options.cpus_per_worker)), "init_state": init_state,
           "kill_marker": rank_kill_marker(), "test_split": test_split}
    ray_session = RayDispatcher(DispatchOptions(address=options.address), out)
    ray_session.start()
    try:
        _check_resources(options)
        try:
            with _epoch_lines(storage, name, recipe.epochs) if progress else nullcontext():
                checkpoint = _trainer(job, options, storage, name).fit().checkpoint
        except ray.train.TrainingFailedError as err:
            return _failed(config, recipe, seed, options, out, err)
    finally:
        ray_session.shutdown()
    _copy_outputs(checkpoint, out)
    return TrainResult.from_dict(json.loads((out / METRICS).read_text()))


def _trainer(job: Mapping[str, Any], options: WorkerOptions, storage: str, name: str) -> TorchTrainer:
    """The Ray Train trainer of ``job``: its workers, their resources and backend, storage, retries."""
    gpu = options.gpus_per_worker > 0
    return TorchTrainer(
        _worker_loop, train_loop_config=dict(job), torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": options.cpus_per_worker,
                                                           "GPU": options.gpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=options.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))


def _check_options(options: WorkerOptions) -> None:
    """One-line errors for settings a distributed training cannot honour."""
    if options.workers < 1:
        raise UserError(f"workers must be at least 1, got {options.workers}")
    if options.cpus_per_worker <= 0 or options.gpus_per_worker < 0:
        raise UserError("CPUs per worker must be positive and GPUs per worker not negative")


def _check_resources(options: WorkerOptions) -> None:
    """On a local Ray, fail at once when the workers cannot all start (Ray would wait for ever)."""
    if options.address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster may grow (autoscaling): let Ray wait for its nodes
    have = ray.cluster_resources()
    for key, each in (("CPU", options.cpus_per_worker), ("GPU", options.gpus_per_worker)):
        if each * options.workers > have.get(key, 0):
            raise UserError(f"{options.workers} workers x {each:g} {key}s do not fit this machine's "
                            f"{have.get(key, 0):g} {key}s; use fewer workers or join a cluster with --address")


def _check_resumable(checkpoint: Checkpoint | None, identity: Mapping[str, Any], where: str) -> None:
    """Refuse (one line) a checkpoint written for another config, schedule, seed or number of workers."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        payload = FileCheckpoints(folder).load()
    if payload is not None:
        check_identity(payload, identity, where, IDENTITY_OMITTED)


def _copy_outputs(checkpoint: Checkpoint | None, out: Path) -> None:
    """The result files of the final checkpoint into ``out``."""
    if checkpoint is None:
        raise UserError("the distributed training ended without a checkpoint")
    with checkpoint.as_directory() as folder:
        for name in _OUTPUTS:  # a diverged run has no model
            if (Path(folder) / name).is_file():
                tmp = out / f".{name}.tmp"
                shutil.copyfile(Path(folder) / name, tmp)
                os.replace(tmp, out / name)


def _failed(config: X3DConfig, recipe: Recipe, seed: int, options: WorkerOptions, out: Path,
            error: Exception) -> TrainResult:
    """The result of a run Ray Train gave up on, written to ``out/metrics.json`` as the loop writes it."""
    reason = next((line.strip() for line in reversed(str(error).splitlines()) if line.strip()), type(error).__name__)
    result = TrainResult(status="failed", reason=f"{type(error).__name__}: {reason}"[:300], seed=seed,
                         config=config.to_dict(), schedule=recipe.name, train_crop=recipe.train_crop(config),
                         world_size=options.workers, global_batch=options.workers * recipe.batch_size)
    atomic_write(out / METRICS, json.dumps(result.to_dict(), indent=2))
    return result
