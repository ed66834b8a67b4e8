"""Distributed full training (issue 15): the training loop on Ray Train workers, DDP over gloo on CPU.

Six 16-px training videos of three classes and a schedule of three one-step epochs per worker
(batch 3 per worker), so a training costs about one Ray Train worker-group start. The trainings in
this process share one local Ray (2 CPUs): a final training of the runner on two workers, one of
which is killed after its first checkpoint, and a one-worker training. The command line that gets
killed runs in its own process group with its own Ray, and must end like the runner's training.
Two gloo processes without Ray check that the workers agree on each loss and on the time budget.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import Dataset

from x3dsearch.cli import main
from x3dsearch.config import X3DConfig
from x3dsearch.data import make_synthetic
from x3dsearch.distributed import _Shard, _sync_bn_copy, _Worker, train_distributed
from x3dsearch.evaluate import Feed
from x3dsearch.model import build_model
from x3dsearch.runner import Session
from x3dsearch.runspec import ExpandSettings, resolve
from x3dsearch.faults import KILL_WORKER_ONCE_ENV
from x3dsearch.workers import WorkerOptions
from x3dsearch.schedule import load_schedule
from x3dsearch.train import TrainResult, train

CLASSES = ["texture-vertical", "flicker-3.5hz", "order-h-then-v"]
CONFIG = X3DConfig.from_dict({"frames": 1, "stride": 8, "crop": 32, "num_classes": 3, "head_width": 32})
SCHEDULE = {"epochs": 3, "batch_size": 3, "ref_batch_size": 3, "base_lr": 0.1, "spatial_scale": 0.5,
            "eval_views": [1, 1], "precision": "fp32", "cache": False, "precise_bn_clips": 6}
TIMING = ("seconds", "cpu_seconds", "clips_per_s", "peak_memory_mb")  # what measures the machine, not the training
OUTPUTS = {"metrics.json", "model.pt", "config.yaml"}
TIMEOUT_S = 300


def _measured(result: TrainResult | dict[str, Any]) -> dict[str, Any]:
    """A result without its timing fields."""
    data = result.to_dict() if isinstance(result, TrainResult) else result
    return {k: v for k, v in data.items() if k not in TIMING}


@pytest.fixture(scope="module", autouse=True)
def _environment() -> Iterator[None]:
    """One thread (the single-process trainings), Ray Train's reports taken in quickly, no cluster, no kills."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # Ray Train takes in one report per poll
        for name in ("RAY_ADDRESS", KILL_WORKER_ONCE_ENV):
            mp.delenv(name, raising=False)
        yield


@contextmanager
def _ray_temp_dir() -> Iterator[str]:
    """A private Ray temp dir (short: Ray's socket paths are length-limited), removed afterwards."""
    tmp = tempfile.mkdtemp(prefix="x3d", dir="/tmp")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic classes (two train and two val videos each, 16 px, 0.5 s), the config and the schedule,
    also with a loader worker process (loaders.yaml) for the trainings in Ray workers."""
    root = tmp_path_factory.mktemp("bench")
    make_synthetic(root / "data", seed=0, videos_per_class=2, val_per_class=2, seconds=0.5, side=16, workers=1,
                   classes=CLASSES)
    (root / "tiny.yaml").write_text(yaml.safe_dump(SCHEDULE))
    (root / "loaders.yaml").write_text(yaml.safe_dump(dict(SCHEDULE, num_workers=1)))
    (root / "space.yaml").write_text(yaml.safe_dump({"name": "tiny", "start": CONFIG.to_dict(),
                                                     "axes": {"width": {"width": 2.0}}}))
    CONFIG.to_yaml(root / "config.yaml")
    return root


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One new local Ray with two CPUs for the trainings in this process."""
    with _ray_temp_dir() as tmp:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=tmp)
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def two_workers(local_ray: None, bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The final training as ``expand --full-workers 2`` runs it, with one worker killed after its first
    checkpoint: RUN_DIR/final and the kill hook's marker."""
    root = tmp_path_factory.mktemp("two")
    settings = ExpandSettings(target_gflops=1.0, out=str(root / "run"), space=str(bench / "space.yaml"),
                              data=str(bench / "data"), proxy_schedule=str(bench / "tiny.yaml"),
                              full_schedule=str(bench / "loaders.yaml"), full_workers=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KILL_WORKER_ONCE_ENV, str(root / "killed"))
        metrics = Session(resolve(settings), quiet=True).train_final(CONFIG)
    assert metrics["status"] == "ok", metrics["reason"]
    return root / "run" / "final", root / "killed"


# -- without Ray: the pieces a worker adds to the loop ------------------------------------------


class _Indices(Dataset):
    """Item i is i."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, i: int) -> int:
        return i


def _order(feed: Feed, epoch: int) -> list[int]:
    return [int(i) for batch in feed.loader(_Indices(), 1, True, epoch) for i in batch]


def test_shards_split_the_order_a_single_process_reads() -> None:
    alone = Feed(5, 0, torch.device("cpu"), False, None)
    for epoch in (0, 3):
        order = _order(alone, epoch)
        shards = [_order(Feed(5, 0, torch.device("cpu"), False, None,
                              lambda d, shuffle, g, rank=rank: _Shard(d, 2, rank, shuffle, g)), epoch)
                  for rank in (0, 1)]
        assert sorted(order) == list(range(7)) and order != list(range(7))
        assert len(shards[0]) == len(shards[1]) == 4  # padded: both ranks take the same number of steps
        assert [i for pair in zip(*shards) for i in pair][:7] == order
        one = Feed(5, 0, torch.device("cpu"), False, None, lambda d, shuffle, g: _Shard(d, 1, 0, shuffle, g))
        assert _order(one, epoch) == order


def test_sync_batchnorm_copy_shares_every_tensor_with_the_model() -> None:
    model = build_model(CONFIG)
    synced = _sync_bn_copy(model)
    assert all(a is b for a, b in zip(model.parameters(), synced.parameters()))
    assert all(a is b for a, b in zip(model.buffers(), synced.buffers()))
    kinds = {type(m).__name__ for m in synced.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm3d" not in kinds
    assert "SyncBatchNorm" not in {type(m).__name__ for m in model.modules()}


def _gloo_worker(rank: int, port: int, bench: str, out: str) -> None:
    """One of two gloo processes (no Ray): the loss and stop votes, then a training stopped by its time budget."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        worker = _Worker(rank, 2, torch.device("cpu"), 0, None)
        votes = {"mean": worker.mean(torch.tensor(float(rank))), "any": worker.any(rank == 1)}
        schedule = load_schedule(Path(bench) / "tiny.yaml").recipe.replace(time_budget_s=1e-3)
        result = train(CONFIG, Path(bench) / "data", schedule, seed=0, threads=1, parallel=worker)
        Path(out, f"{rank}.json").write_text(json.dumps(dict(votes, result=result.to_dict())))
    finally:
        dist.destroy_process_group()


def test_workers_agree_on_the_loss_and_the_time_budget(bench: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_gloo_worker, args=(port, str(bench), str(tmp_path)), nprocs=2)
    chief, other = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1))
    assert chief["mean"] == other["mean"] == 0.5 and chief["any"] is other["any"] is True
    assert chief["result"]["stopped_early"] and other["result"]["stopped_early"]
    assert chief["result"]["clips_seen"] == other["result"]["clips_seen"] == 6  # one step of 2 x 3 clips
    assert chief["result"]["top1"] is not None and other["result"]["top1"] is None  # only rank 0 tests


def test_cli_refuses_worker_options_for_one_worker(bench: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--config", str(bench / "config.yaml"), "--data", str(bench / "data"), "--out", str(tmp_path)]
    assert main([*args, "--storage", str(tmp_path)]) == 2
    assert main([*args, "--workers", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["x3dsearch train: error: --storage only apply with --workers 2 or more",
                   "x3dsearch train: error: --workers must be at least 1"]


# -- on Ray Train ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_train_and_test_once(two_workers: tuple[Path, Path]) -> None:
    reference = two_workers[0]
    assert OUTPUTS <= {p.name for p in reference.iterdir()}
    metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["status"] == "ok" and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert metrics["val"]["top1"] == metrics["top1"] and metrics["test"]["videos"] == 6  # the final scores test too
    assert (metrics["world_size"], metrics["global_batch"]) == (2, 6)
    assert metrics["clips_seen"] == 3 * 6 and len(metrics["epoch_losses"]) == 3
    build_model(CONFIG).load_state_dict(torch.load(reference / "model.pt", weights_only=True))  # no DDP prefix
    assert X3DConfig.from_yaml(reference / "config.yaml") == CONFIG


@pytest.mark.slow
def test_one_worker_equals_the_single_process_loop(local_ray: None, bench: Path, tmp_path: Path) -> None:
    schedule = load_schedule(bench / "tiny.yaml").recipe
    start = build_model(CONFIG).state_dict()
    alone = train(CONFIG, bench / "data", schedule, seed=1, threads=1, init_state=start, test_split=True)
    one = train_distributed(CONFIG, bench / "data", schedule, 1, out_dir=tmp_path / "ray",
                            options=WorkerOptions(workers=1), init_state=start, test_split=True)
    assert _measured(one) == _measured(alone) and alone.status == "ok" and alone.test is not None
    assert main(["train", "--config", str(bench / "config.yaml"), "--data", str(bench / "data"), "--schedule",
                 str(bench / "tiny.yaml"), "--seed", "1", "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert _measured(cli) == _measured(train(CONFIG, bench / "data", schedule, seed=1, threads=1, test_split=True))


@pytest.mark.slow
def test_killed_worker_continues_from_the_last_checkpoint(two_workers: tuple[Path, Path]) -> None:
    pid, *epochs = two_workers[1].read_text().split()
    assert pid.isdigit() and epochs == ["2", "3"]  # its replacement started after the first epoch
    assert json.loads((two_workers[0] / "metrics.json").read_text())["status"] == "ok"


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: the CLI, its Ray, the workers and their loader processes."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:  # gone meanwhile
                pass


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_with_resume(two_workers: tuple[Path, Path], bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [sys.executable, "-m", "x3dsearch.cli", "train", "--config", str(bench / "config.yaml"), "--data",
            str(bench / "data"), "--schedule", str(bench / "loaders.yaml"), "--workers", "2", "--out", str(out)]
    with _ray_temp_dir() as tmp, (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(args, env=dict(os.environ, RAY_TMPDIR=tmp), stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not list(out.glob("train-*/checkpoint_*")):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.05)
        finally:
            _kill_session(proc.pid)
            proc.wait()
    assert not (out / "metrics.json").exists()
    with _ray_temp_dir() as tmp:
        rerun = subprocess.run([*args, "--resume"], env=dict(os.environ, RAY_TMPDIR=tmp), capture_output=True,
                               text=True, timeout=TIMEOUT_S, start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "top1" in rerun.stdout and "resuming" not in rerun.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["world_size"] == 2
    # a driver killed and a worker killed (the runner's training) leave no trace in the numbers
    assert _measured(metrics) == _measured(json.loads((two_workers[0] / "metrics.json").read_text()))
