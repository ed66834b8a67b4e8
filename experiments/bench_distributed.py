"""Distributed full training on this machine: 2 Ray Train workers x 1 CPU against 1 process x 2 threads.

The same model, data, schedule and global batch (``--batch`` clips a step): the single process
trains with ``batch`` clips on two threads (:func:`x3dsearch.train.train`, today's path); the
distributed run trains with ``batch / 2`` clips on each of two one-thread DDP workers over gloo
(:func:`x3dsearch.distributed.train_distributed`, which scales the learning rate to the same global
batch). With ``--cluster`` the two workers also run on a two-node ``ray.cluster_utils.Cluster``
(two raylets of one CPU each on this machine: each worker on its own Ray node, as on two hosts, though
they still talk over loopback).

Columns: ``wall s`` is the whole call (for Ray: start-up, worker group, checkpoints to storage,
shutdown); ``loop s`` the training loop's own wall time including testing (rank 0's); ``clips/s``
training clips per second of training time (global); ``top-1`` on the schedule's validation views.
``load`` is the 1-minute load average before and after the run: the machine is shared, so the
numbers only compare runs made under a similar load. On a busy machine the two-thread process
collapses with OpenMP's default of spinning while waiting (measured here at load 6-9 on 2 cores:
2 clips/s against 15 with ``OMP_WAIT_POLICY=PASSIVE``); one-thread workers do not wait on threads.

    .venv/bin/python experiments/bench_distributed.py                 # XS, cpu_full for 2 epochs, batch 16
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python experiments/bench_distributed.py --cluster
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from x3dsearch.config import X3DConfig, preset
from x3dsearch.data import default_dataset
from x3dsearch.distributed import train_distributed
from x3dsearch.workers import WorkerOptions
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule
from x3dsearch.train import TrainResult, train


@dataclass(frozen=True)
class Row:
    """One measured setup."""

    setup: str
    wall_s: float
    result: TrainResult
    load: tuple[float, float]


def measure(setup: str, run: Callable[[], TrainResult]) -> Row:
    """Time ``run`` and note the load average around it."""
    before, started = os.getloadavg()[0], time.perf_counter()
    result = run()
    if result.status != "ok":
        sys.exit(f"{setup}: {result.status}: {result.reason}")
    return Row(setup, time.perf_counter() - started, result, (before, os.getloadavg()[0]))


def warm_cache(config: X3DConfig, data: Path, schedule: Recipe) -> None:
    """Decode the clip caches the runs read, so that no measured run pays for building them."""
    from x3dsearch.data import VideoDataset

    scaled = config.replace(crop=schedule.train_crop(config))
    for split, views in (("train", (1, 1)), ("val", schedule.eval_views)):
        VideoDataset(data, scaled, split=split, cache_dir=schedule.cache or None, views=views)


def alone(config: X3DConfig, data: Path, schedule: Recipe, seed: int) -> TrainResult:
    """The single-process path on two threads."""
    return train(config, data, schedule, seed=seed, threads=2)


def workers(config: X3DConfig, data: Path, schedule: Recipe, seed: int, address: str | None = None) -> TrainResult:
    """Two one-CPU Ray Train workers with half the batch each (a fresh output folder, so no resume)."""
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as out:
        return train_distributed(config, data, schedule.replace(batch_size=schedule.batch_size // 2), seed,
                                 out_dir=out, options=WorkerOptions(workers=2, address=address))


def on_two_nodes(config: X3DConfig, data: Path, schedule: Recipe, seed: int) -> TrainResult:
    """:func:`workers` on a local two-node cluster of one CPU per node."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        return workers(config, data, schedule, seed, address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


def table(rows: list[Row], batch: int) -> str:
    """The measurements as a text table."""
    lines = [f"{'setup':<34}{'global batch':>13}{'wall s':>8}{'loop s':>8}{'clips/s':>9}{'top-1':>7}{'load':>12}"]
    for r in rows:
        lines.append(f"{r.setup:<34}{batch:>13}{r.wall_s:>8.1f}{r.result.seconds:>8.1f}{r.result.clips_per_s:>9.1f}"
                     f"{r.result.top1:>7.1%}{r.load[0]:>6.1f}>{r.load[1]:<5.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="XS", help="model (default: %(default)s)")
    parser.add_argument("--schedule", default="cpu_full",
                        help="schedule, without its time budget (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="global batch, even (default: %(default)s)")
    parser.add_argument("--views", type=int, nargs=2, default=(1, 1), metavar=("K", "S"),
                        help="test views (default: 1 1)")
    parser.add_argument("--data", help="dataset folder (default: the synthetic benchmark)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster", action="store_true", help="also on a two-node ray.cluster_utils.Cluster")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all setups, interleaved (default: 1)")
    args = parser.parse_args()
    if args.batch % 2:
        parser.error("--batch must be even: it is split over two workers")
    data = Path(args.data or default_dataset())
    schedule = load_schedule(args.schedule).recipe.replace(epochs=args.epochs, batch_size=args.batch,
                                                           time_budget_s=None, eval_views=tuple(args.views))
    config = preset(args.preset, num_classes=12)
    print(f"{config.short}, {schedule.name} for {args.epochs} epochs at {schedule.train_crop(config)} px on {data}, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    warm_cache(config, data, schedule)
    setups = {"1 process x 2 threads": alone, "2 Ray Train workers x 1 CPU": workers}
    if args.cluster:
        setups["2 workers on a 2-node Cluster"] = on_two_nodes
    rows = [measure(name, lambda run=run: run(config, data, schedule, args.seed))
            for _ in range(args.repeat) for name, run in setups.items()]
    print(table(rows, args.batch))
    policy = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    print(f"command: {policy}{shlex.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
