"""One training loop for every fidelity: proxy trainings of the search and the final training.

:func:`train` trains ``build_model(config)`` with a :class:`~x3dsearch.recipe.Recipe`
(SGD with momentum or, for short proxies, AdamW; linear warm-up then cosine learning rate per
step; weight decay off BN and biases; optional label smoothing; optional precise BN), evaluates with multi-view
testing on val (and on test when asked) and returns a :class:`TrainResult`. With ``out_dir`` it checkpoints every
epoch and resumes exactly.
Nothing inside a run escapes as an exception: failures come back as ``status="failed"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import resource
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Sampler

from .checkpoint import CHECKPOINT, CheckpointStore, FileCheckpoints, atomic_torch_save, capture_rng, check_identity, restore_rng
from .config import X3DConfig
from .errors import ConfigError
from .evaluate import Feed, precise_bn, score_views
from .heap import keep_freed_memory
from .model import build_model
from .progress import Progress, progress
from .rundir import atomic_write
from .faults import nan_loss_now
from .recipe import UNWRITTEN_DEFAULTS, Recipe
from .scores import Scores

__all__ = ["TrainResult", "Parallel", "train", "evaluate_weights", "resolve_threads", "checkpoint_identity",
           "IDENTITY_OMITTED", "cpu_time", "CHECKPOINT", "METRICS", "MODEL", "CONFIG"]

METRICS, MODEL, CONFIG = "metrics.json", "model.pt", "config.yaml"
_EXPLODE_FACTOR = 20.0  # a loss this many times the first step's loss counts as divergence

EpochCallback = Callable[[int, Mapping[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training: accuracy on the validation views only when ``status == "ok"``.

    ``top1``/``top5`` are val's; ``val`` and ``test`` hold each split's per-class and per-group results.
    """

    status: str
    reason: str = ""
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    epoch_losses: tuple[float, ...] = ()
    clips_seen: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the process and its reaped children (loader workers; rank 0's alone in a
    # distributed run): not the time spent waiting for a core, which wall time (``seconds``) counts
    clips_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    threads: int = 1
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    schedule: str = ""  # the recipe's name
    train_crop: int = 0
    skipped: tuple[tuple[str, str], ...] = ()
    stopped_early: bool = False
    diverged_step: int | None = None
    world_size: int = 1
    global_batch: int = 0
    val: Scores | None = None
    test: Scores | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists instead of tuples)."""
        out = dataclasses.asdict(self)
        out["epoch_losses"] = list(self.epoch_losses)
        out["skipped"] = [list(s) for s in self.skipped]
        out.update({split: scores.to_dict() if scores else None for split, scores in (("val", self.val),
                                                                                       ("test", self.test))})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainResult":
        """Inverse of :meth:`to_dict`; metrics written before per-class results have ``val = test = None``."""
        data = dict(data)
        data["epoch_losses"] = tuple(data.get("epoch_losses", ()))
        data["skipped"] = tuple(tuple(s) for s in data.get("skipped", ()))
        for split in ("val", "test"):
            data[split] = Scores.from_dict(data[split]) if data.get(split) else None
        return cls(**data)


class _Diverged(Exception):
    """The loss became NaN/inf or exploded at ``step``."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss {loss:.4g} at step {step}")
        self.step = step


@dataclass
class _State:
    """Everything a checkpoint restores besides model, optimiser and scheduler."""

    epoch: int = 0
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    first_loss: float | None = None
    clips_seen: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    done: bool = False
    stopped_early: bool = False


class Parallel:
    """How a run shares its training with other processes; this base class is a run alone.

    A distributed worker (:mod:`x3dsearch.distributed`) overrides it: ``wrap`` turns the built model
    into the module that trains (DDP), ``sampler`` shards the training set (see
    :class:`~x3dsearch.evaluate.Feed`; ``loader_start`` how its loader processes start), ``mean`` and
    ``any`` agree on a step's loss and on the time budget so that all workers take the same steps,
    ``store`` keeps the checkpoints. Only the ``chief`` tests.
    """

    world_size: int = 1
    chief: bool = True
    sampler: Callable[[Dataset, bool, torch.Generator], Sampler] | None = None
    loader_start: str | None = None  # how loader worker processes start (Feed.start_method)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that takes the training steps (it shares its parameters with ``model``)."""
        return model

    def mean(self, loss: torch.Tensor) -> float:
        """The loss of a step as every process sees it."""
        return loss.item()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (every process stops at the time budget together)."""
        return flag

    def store(self, out_dir: Path | None) -> CheckpointStore | None:
        """Where checkpoints go: ``out_dir/checkpoint.pt``, or nowhere without ``out_dir``."""
        return FileCheckpoints(out_dir) if out_dir is not None else None


def checkpoint_identity(config: X3DConfig, recipe: Recipe, seed: int) -> dict[str, Any]:
    """What a checkpoint must have been written for to be resumed by a run."""
    return {"config": config.to_dict(), "schedule": recipe.to_dict(), "seed": seed}


IDENTITY_OMITTED = {"schedule": UNWRITTEN_DEFAULTS}  # check_identity's ``omitted`` for these identities


def resolve_threads(threads: int | None = None) -> int:
    """Intra-op threads: the argument, else the CPUs Ray assigned, else OMP_NUM_THREADS, else all cores."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        return int(threads)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except Exception:  # the driver has no assigned resources on some Ray versions
            cpus = None
        if cpus:
            return max(1, int(cpus))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return os.cpu_count() or 1


def train(config: X3DConfig, data: str | Path | tuple[Dataset, ...], recipe: Recipe,
          seed: int = 0, *, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = False, device: str | torch.device | None = None, threads: int | None = None,
          on_epoch: EpochCallback | None = None,
          init_state: Mapping[str, torch.Tensor] | None = None,
          weights_out: str | Path | None = None, stop_after_epochs: int | None = None,
          parallel: Parallel | None = None, test_split: bool = False) -> TrainResult:
    """Train and evaluate ``config`` on ``data`` (a dataset root or a (train, val[, test]) tuple) with ``recipe``.

    With ``out_dir``, a checkpoint is written there after every epoch and ``metrics.json``,
    ``model.pt`` and ``config.yaml`` at the end; ``resume=True`` continues from the checkpoint
    and ends with the same metrics as an uninterrupted run. ``init_state`` starts from those
    weights (e.g. inherited from a parent) instead of a fresh initialisation; ``weights_out`` keeps
    the trained state dict in that file. ``stop_after_epochs`` pauses the recipe after that many
    epochs (its learning rate still follows all ``recipe.epochs``) and evaluates: a later call with
    ``resume=True`` and a larger value continues it, as successive halving's rungs do. Errors
    inside the run come back as ``status="failed"`` (only KeyboardInterrupt propagates). ``parallel``
    makes this process one worker of a distributed training (see :class:`Parallel`). On CPU the
    process keeps freed memory for reuse from then on (:func:`x3dsearch.heap.keep_freed_memory`).
    ``test_split`` also scores the test split, when the data has one (a final training; a search
    selects on val only).
    """
    device = torch.device(device) if device is not None else _default_device()
    if device.type == "cpu":
        keep_freed_memory()  # each step reuses its pages instead of faulting them in again
    run = _Run(config, recipe, seed, out_dir=Path(out_dir) if out_dir is not None else None, device=device,
               threads=resolve_threads(threads), progress=progress, on_epoch=on_epoch, init_state=init_state,
               weights_out=Path(weights_out) if weights_out is not None else None,
               stop_after_epochs=stop_after_epochs, parallel=parallel or Parallel(), test_split=test_split)
    checkpoint = run.load_checkpoint() if resume else None
    return run.execute(data, checkpoint)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def cpu_time() -> float:
    """User and system CPU seconds of this process and of its reaped children (loader workers a fork started)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only, not on BatchNorm parameters or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, recipe: Recipe, workers: int) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's recipe) or AdamW, at the peak LR scaled to the global batch.

    On CPU the fused kernel: PyTorch's default there loops over the parameters in Python, several small
    ops each (AdamW: 1.31x the whole X2D proxy step, 1.07x XS; docs/performance-batch.md).
    """
    groups = _param_groups(model, recipe.weight_decay)
    lr = recipe.lr() * workers
    fused = True if next(model.parameters()).device.type == "cpu" else None
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(recipe.momentum, 0.999), fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, fused=fused)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Half-period cosine over all steps, multiplied by a linear warm-up over the first ``warmup``."""
    cosine = 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
    return cosine * min(1.0, (step + 1) / warmup) if warmup > 0 else cosine


def _eval_set(data: str | Path, config: X3DConfig, recipe: Recipe, split: str, seed: int) -> Dataset:
    """A split of a dataset root as the recipe scores it: its input size and views (val: its ``val_videos``)."""
    from .data import VideoDataset

    return VideoDataset(data, config.replace(crop=recipe.train_crop(config)), split=split,
                        cache_dir=recipe.cache or None, views=recipe.eval_views,
                        max_videos=recipe.val_videos if split == "val" else None, seed=seed)


def _open_datasets(data: str | Path | tuple[Dataset, ...], config: X3DConfig, recipe: Recipe, seed: int,
                   test_split: bool) -> tuple[Dataset, dict[str, Dataset]]:
    """The training set and the sets to score ({"val": ..., "test": ... when asked and present}).

    Datasets are taken as given, or opened as ``VideoDataset``s of a root at the recipe's input size.
    """
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 3):
            raise ConfigError("data must be a dataset root or a (train, val[, test]) tuple of datasets")
        return data[0], dict(zip(("val", "test"), data[1:3 if test_split else 2]))
    from .data import VideoDataset

    train_set = VideoDataset(data, config.replace(crop=recipe.train_crop(config)), split="train",
                             cache_dir=recipe.cache or None, max_videos=recipe.train_videos, seed=seed)
    splits = ("val", "test") if test_split and (Path(data) / "test.csv").is_file() else ("val",)
    scored = {split: _eval_set(data, config, recipe, split, seed) for split in splits}
    classes = getattr(train_set, "num_classes", 0)
    if classes > config.num_classes:
        raise ConfigError(f"the data has {classes} classes but the config only {config.num_classes}")
    if len(train_set) == 0 or len(scored["val"]) == 0:
        raise ConfigError(f"no usable videos (train {len(train_set)}, val {len(scored['val'])})")
    return train_set, scored


def _views(dataset: Dataset, recipe: Recipe) -> int:
    """Views per video of the recipe's testing, as the dataset takes them (one crop where its frames are square)."""
    views = getattr(dataset, "views", None)
    windows, crops = views if isinstance(views, tuple) and len(views) == 2 else recipe.eval_views
    return windows * crops


def _test(model: nn.Module, train_set: Dataset, scored: Mapping[str, Dataset], feed: Feed,
          recipe: Recipe) -> dict[str, Scores]:
    """Precise BN (when the recipe asks), then each split's scores over the recipe's views."""
    if recipe.precise_bn_clips:
        precise_bn(model, train_set, feed, recipe.batch_size, recipe.precise_bn_clips, recipe.epochs)
    return {split: score_views(model, dataset, feed, recipe.batch_size, _views(dataset, recipe), split)
            for split, dataset in scored.items()}


def evaluate_weights(config: X3DConfig, state: Mapping[str, torch.Tensor], data: str | Path,
                     recipe: Recipe, split: str = "val", seed: int = 0, threads: int | None = None) -> Scores:
    """Score saved weights on one split of ``data`` as ``train`` scores its result (input size, views, subset)."""
    device = _default_device()
    dataset = _eval_set(data, config, recipe, split, seed)
    model = build_model(config)
    model.load_state_dict(state)
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    with _torch_settings(resolve_threads(threads), device):
        return score_views(model, dataset, _feed(recipe, seed, device, None), recipe.batch_size,
                           _views(dataset, recipe), split)


def _native_cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: ``bf16`` asked for, or ``auto`` on a bf16 GPU. A CPU without native bf16
    (oneDNN's AVX-512 BF16 or AMX) trains in fp32 instead, after one warning: emulated bf16 is slower."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and device.type == "cpu" and not _native_cpu_bf16():
        warnings.warn("precision bf16: this CPU has no native bf16, training in fp32", RuntimeWarning, stacklevel=2)
        return False
    return precision == "bf16"


def _feed(recipe: Recipe, seed: int, device: torch.device, start_method: str | None) -> Feed:
    """How batches reach the model: bf16 autocast when the recipe asks and the device can (:func:`_bf16`)."""
    bf16 = _bf16(recipe.precision, device)
    return Feed(seed, recipe.num_workers, device, recipe.channels_last,
                torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext(),
                start_method=start_method)


@contextmanager
def _torch_settings(threads: int, device: torch.device) -> Iterator[None]:
    """Intra-op threads and (on CPU) deterministic algorithms for the run, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


class _Run:
    """One training run: builds model and optimiser, runs epochs, keeps the result bookkeeping."""

    def __init__(self, config: X3DConfig, recipe: Recipe, seed: int, *, out_dir: Path | None,
                 device: torch.device, threads: int, progress: bool, on_epoch: EpochCallback | None,
                 init_state: Mapping[str, torch.Tensor] | None = None, weights_out: Path | None = None,
                 stop_after_epochs: int | None = None, parallel: Parallel, test_split: bool = False) -> None:
        self.config, self.recipe, self.seed, self.parallel = config, recipe, seed, parallel
        self.test_split = test_split
        self.weights_out, self.stop = weights_out, stop_after_epochs or recipe.epochs
        self.out_dir, self.device, self.threads = out_dir, device, threads
        self.progress, self.on_epoch, self.init_state = progress and parallel.chief, on_epoch, init_state
        self.checkpoints = _Checkpoints(parallel.store(out_dir), checkpoint_identity(config, recipe, seed), device)
        self.train_crop = recipe.train_crop(config)
        self.feed = _feed(recipe, seed, device, parallel.loader_start)
        self.state = _State()
        self.skipped: tuple[tuple[str, str], ...] = ()
        self.started, self.cpu_started = time.monotonic(), cpu_time()
        self.wall_before = self.cpu_before = 0.0

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The stored checkpoint if any; one made for another config/recipe/seed is an error."""
        return self.checkpoints.load()

    def execute(self, data: str | Path | tuple[Dataset, ...], checkpoint: dict[str, Any] | None) -> TrainResult:
        """Run to the end and return the result; exceptions become ``failed``, divergence ``diverged``."""
        try:
            with _torch_settings(self.threads, self.device):
                scores = self._train_and_evaluate(data, checkpoint)
            val = scores.get("val")
            result = self._result("ok", top1=val.top1 if val else None, top5=val.top5 if val else None, val=val,
                                  test=scores.get("test"))
        except _Diverged as err:
            result = self._result("diverged", reason=f"diverged: {err}", diverged_step=err.step)
        except Exception as err:  # noqa: BLE001 - the edge of a trial: report, never crash the search
            result = self._result("failed", reason=f"{type(err).__name__}: {err}")
        if self.out_dir is not None:
            atomic_write(self.out_dir / METRICS, json.dumps(result.to_dict(), indent=2))
        return result

    def _result(self, status: str, **fields: Any) -> TrainResult:
        s = self.state
        return TrainResult(
            status=status, loss=s.epoch_losses[-1] if s.epoch_losses else None,
            epoch_losses=tuple(s.epoch_losses), clips_seen=s.clips_seen,
            seconds=self._seconds(), cpu_seconds=self._cpu_seconds(),
            clips_per_s=s.clips_seen / s.train_seconds if s.train_seconds > 0 else 0.0,
            peak_memory_mb=_peak_memory_mb(self.device), device=str(self.device), threads=self.threads,
            seed=self.seed, config=self.config.to_dict(), schedule=self.recipe.name,
            train_crop=self.train_crop, skipped=self.skipped, stopped_early=s.stopped_early,
            world_size=self.parallel.world_size, global_batch=self.recipe.batch_size * self.parallel.world_size,
            **fields)

    def _seconds(self) -> float:
        """Wall time of the whole run, including the time spent before a resume."""
        return self.wall_before + time.monotonic() - self.started

    def _cpu_seconds(self) -> float:
        """CPU time of the whole run (this process and its ended children), including before a resume."""
        return self.cpu_before + cpu_time() - self.cpu_started

    def _train_and_evaluate(self, data: str | Path | tuple[Dataset, ...],
                            checkpoint: dict[str, Any] | None) -> dict[str, Scores]:
        _seed_everything(self.seed)
        recipe = self.recipe
        train_set, scored = _open_datasets(data, self.config, recipe, self.seed, self.test_split)
        self.skipped = tuple(tuple(s) for d in (train_set, *scored.values()) for s in getattr(d, "skipped", ()))
        parts = _Parts.build(self.config, recipe, len(train_set), self.device, self.init_state, self.parallel)
        if checkpoint is not None:
            self.state = self.checkpoints.restore(parts, checkpoint)
            self.wall_before, self.cpu_before = self.state.wall_seconds, self.state.cpu_seconds
        feed = dataclasses.replace(self.feed, sampler=self.parallel.sampler)
        epochs = _Epochs(self.state, recipe, feed, parts, self._seconds, self.parallel,
                         coarse_pool=recipe.coarse_pool(self.config))
        bar = progress(total=parts.total_steps, initial=self.state.step, unit="step", enabled=self.progress)
        try:
            while not self.state.done and self.state.epoch < self.stop:
                epochs.run(train_set, bar if self.progress else None)
                self.state.cpu_seconds = self._cpu_seconds()
                self.checkpoints.save(parts, self.state)
                if self.on_epoch is not None:
                    self.on_epoch(self.state.epoch, {"loss": self.state.epoch_losses[-1],
                                                     "clips_seen": self.state.clips_seen,
                                                     "seconds": self._seconds()})
        finally:
            bar.close()
        if not self.parallel.chief:
            return {}
        scores = _test(parts.model, train_set, scored, self.feed, recipe)
        _save_outputs(parts.model, self.config, self.weights_out, self.out_dir)
        return scores


def _save_outputs(model: nn.Module, config: X3DConfig, weights_out: Path | None, out_dir: Path | None) -> None:
    """The trained weights into ``weights_out`` and ``out_dir/model.pt``, the config into ``out_dir/config.yaml``."""
    for path in (weights_out, out_dir / MODEL if out_dir is not None else None):
        if path is not None:
            atomic_torch_save(model.state_dict(), path)
    if out_dir is not None:
        atomic_write(out_dir / CONFIG, config.to_yaml())


class _Checkpoints:
    """A run's parts, counters and RNG states through a store, checked against the run's identity."""

    def __init__(self, store: CheckpointStore | None, identity: Mapping[str, Any], device: torch.device) -> None:
        self.store, self.identity, self.device = store, dict(identity), device

    def load(self) -> dict[str, Any] | None:
        checkpoint = self.store.load() if self.store is not None else None
        if checkpoint is not None:
            check_identity(checkpoint, self.identity, str(getattr(self.store, "path", "the checkpoint")),
                           IDENTITY_OMITTED)
        return checkpoint

    def save(self, parts: "_Parts", state: _State) -> None:
        if self.store is not None:
            self.store.save({**self.identity, **parts.state_dicts(), "state": dataclasses.asdict(state),
                             "rng": capture_rng(self.device)})

    @staticmethod
    def restore(parts: "_Parts", checkpoint: Mapping[str, Any]) -> _State:
        """Load the parts and RNG states; returns the counters to continue from."""
        parts.load_state_dicts(checkpoint)
        restore_rng(checkpoint["rng"])
        return _State(**checkpoint["state"])


@dataclass
class _Parts:
    """What an epoch updates: the model (``net`` trains it: itself, or its DDP wrapper), its optimiser and
    the per-step LR schedule."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int

    @classmethod
    def build(cls, config: X3DConfig, recipe: Recipe, train_clips: int, device: torch.device,
              init_state: Mapping[str, torch.Tensor] | None, parallel: Parallel) -> "_Parts":
        """A fresh (or ``init_state``-initialised) model on ``device`` with its optimiser and recipe.

        Each of the ``parallel.world_size`` processes steps through its share of ``train_clips``.
        """
        model = build_model(config)
        if init_state is not None:
            model.load_state_dict(init_state)
        model = model.to(device)
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        optimizer = _optimizer(model, recipe, parallel.world_size)
        steps_per_epoch = math.ceil(math.ceil(train_clips / parallel.world_size) / recipe.batch_size)
        total = steps_per_epoch * recipe.epochs
        warmup = round(recipe.warmup_epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total, warmup))
        return cls(model, parallel.wrap(model), optimizer, scheduler, total)

    def state_dicts(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dicts(self, checkpoint: Mapping[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])


class _Epochs:
    """The epoch loop: optimisation steps, divergence checks, the time budget and progress."""

    def __init__(self, state: _State, recipe: Recipe, feed: Feed, parts: _Parts,
                 seconds: Callable[[], float], parallel: Parallel, coarse_pool: int = 1) -> None:
        self.state, self.recipe, self.feed, self.parts, self.seconds = state, recipe, feed, parts, seconds
        self.parallel, self.coarse_pool = parallel, coarse_pool

    def run(self, train_set: Dataset, bar: Progress | None) -> None:
        """One epoch (or its rest, up to the time budget); updates the shared state."""
        state, recipe = self.state, self.recipe
        self.parts.net.train()
        if bar is not None:
            coarse = f" (pooled {self.coarse_pool}x)" if self._coarse() else ""
            bar.set_description(f"epoch {state.epoch + 1}/{recipe.epochs}{coarse}")
        total_loss, batches = 0.0, 0
        tick = time.monotonic()
        for clips, labels in self.feed.loader(train_set, recipe.batch_size, True, state.epoch):
            value = self._step(clips, labels)
            state.clips_seen += len(labels) * self.parallel.world_size
            total_loss += value
            batches += 1
            now = time.monotonic()
            if bar is not None:
                elapsed = state.train_seconds + now - tick
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", clips_s=f"{state.clips_seen / max(elapsed, 1e-9):.1f}",
                                refresh=False)
            if recipe.time_budget_s is not None and \
                    self.parallel.any(state.train_seconds + now - tick > recipe.time_budget_s):
                state.stopped_early = True
                break
        state.train_seconds += time.monotonic() - tick
        state.epoch_losses.append(total_loss / max(1, batches))
        state.epoch += 1
        state.done = state.stopped_early or state.epoch >= recipe.epochs
        state.wall_seconds = self.seconds()

    def _coarse(self) -> bool:
        """Whether this epoch trains on pooled clips (the recipe's coarse start, where the side allows it)."""
        return self.coarse_pool > 1 and self.state.epoch < self.recipe.coarse_epochs

    def _step(self, clips: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step; returns the batch loss, raises :class:`_Diverged` on NaN or explosion."""
        state, recipe, parts = self.state, self.recipe, self.parts
        if self._coarse():  # a box filter (pooled, not subsampled), on the device, before the layout change
            pool = self.coarse_pool
            clips = F.avg_pool3d(clips.to(self.feed.device, non_blocking=True), (1, pool, pool))
        clips, labels = self.feed.to_device(clips), labels.to(self.feed.device, non_blocking=True)
        with self.feed.autocast:
            logits = parts.net(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
        if nan_loss_now(state.step):
            loss = loss * float("nan")
        value = self.parallel.mean(loss)
        if state.first_loss is None:
            state.first_loss = value
        if not math.isfinite(value) or value > _EXPLODE_FACTOR * max(state.first_loss, 1.0):
            raise _Diverged(state.step, value)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        state.step += 1
        return value
