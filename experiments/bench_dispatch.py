"""Dispatch overhead and parallel efficiency of Ray Tune trials, with trials of known duration.

Usage: .venv/bin/python experiments/bench_dispatch.py [--seconds 5] [--trials 6]

1. local Ray (this machine's CPUs): per-trial overhead of a step of N sleeping trials;
2. a two-node local Ray cluster (two raylets on this machine, 1 CPU each, joined through
   ``--address`` exactly as a real cluster would be) running the same step.
Efficiency = ideal wall time (trials x seconds / slots) / measured wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import ray
from ray.cluster_utils import Cluster

from x3dsearch.dispatch import DispatchOptions, RayDispatcher


def _sleeper(job: Mapping[str, Any]) -> dict[str, Any]:
    time.sleep(float(job["sleep"]))
    return {"status": "ok", "top1": 0.0, "seconds": float(job["sleep"])}


def _step(dispatcher: RayDispatcher, trials: int, seconds: float) -> float:
    jobs = [{"key": f"t{i}", "sleep": seconds} for i in range(trials)]
    t0 = time.time()
    dispatcher.run(jobs, lambda job, record: None)
    return time.time() - t0


def _report(name: str, wall: float, trials: int, seconds: float, slots: int) -> None:
    ideal = trials * seconds / slots
    per_trial = (wall - ideal) * slots / trials
    print(f"{name:<28} trials={trials} x {seconds:.1f}s on {slots} slots: wall {wall:6.2f}s, "
          f"ideal {ideal:5.2f}s, efficiency {ideal / wall:6.1%}, overhead {per_trial:4.2f}s/trial "
          f"({per_trial / (seconds + per_trial):.1%} of a trial)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="x3dsearch-bench-"))

    t0 = time.time()
    local = RayDispatcher(DispatchOptions(), storage / "local", trial_fn=_sleeper)
    local.start()
    print(f"ray.init (local): {time.time() - t0:.2f}s")
    _step(local, 2, 0.1)  # warm up worker processes
    _report("local Ray", _step(local, args.trials, args.seconds), args.trials, args.seconds,
            int(ray.cluster_resources()["CPU"]))
    local.shutdown()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        remote = RayDispatcher(DispatchOptions(address=cluster.address), storage / "cluster", trial_fn=_sleeper)
        remote.start()
        _step(remote, 2, 0.1)
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        _report(f"2-node cluster ({nodes} nodes)", _step(remote, args.trials, args.seconds), args.trials,
                args.seconds, int(ray.cluster_resources()["CPU"]))
        ray.shutdown()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
