"""Do the axes separate at the proxy schedule? Proxy top-1 of X2D, XS, every one-step expansion of XS and S.

Each model is trained with the proxy schedule (default ``cpu_proxy``) on the default synthetic
benchmark with two seeds, two trainings at a time (one thread each). Prints a markdown table
(GFLOPs at the model's own size, top-1 per seed, mean, seed-to-seed gap) and the X2D-to-S spread.

    .venv/bin/python experiments/proxy_axes.py [--schedule cpu_proxy] [--seeds 0 1] [--data DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from x3dsearch import X3DConfig, count_flops, preset
from x3dsearch.data import default_dataset
from x3dsearch.space import candidates, load_space
from x3dsearch.train import train


def _models() -> dict[str, X3DConfig]:
    """X2D, XS, XS expanded by one step of each axis of the paper's space, and S (12 classes)."""
    xs = preset("XS", num_classes=12)
    models = {"X2D": preset("X2D", num_classes=12), "XS": xs}
    models.update({f"XS +{axis}": config for axis, config in candidates(xs, load_space()).items()})
    models["S"] = preset("S", num_classes=12)
    return models


def _run(job: tuple[str, X3DConfig, str, str, int]) -> tuple[str, int, float | None, float]:
    name, config, data, schedule, seed = job
    result = train(config, data, schedule, seed=seed, threads=1)
    return name, seed, result.top1 if result.status == "ok" else None, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", default="cpu_proxy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data", default=None, help="Kinetics-layout folder (default: the synthetic benchmark)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = args.data or str(default_dataset())
    models = _models()
    jobs = [(name, config, data, args.schedule, seed) for name, config in models.items() for seed in args.seeds]
    jobs.sort(key=lambda job: -count_flops(job[1]))  # longest first keeps both workers busy to the end
    started = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_run, jobs, chunksize=1)
    top1 = {(name, seed): acc for name, seed, acc, _ in results}
    print(f"schedule {args.schedule}, seeds {args.seeds}, {len(jobs)} trainings in {time.time() - started:.0f} s "
          f"on {args.workers} workers\n")
    print("| model | frames×stride | crop | GFLOPs | " + " | ".join(f"seed {s}" for s in args.seeds)
          + " | mean | seed gap |")
    print("|---|---|---|---|" + "---|" * (len(args.seeds) + 2))
    means = {}
    for name, config in models.items():
        accs = [top1[(name, s)] for s in args.seeds]
        ok = [a for a in accs if a is not None]
        means[name] = sum(ok) / len(ok) if ok else float("nan")
        gap = max(ok) - min(ok) if ok else float("nan")
        cells = " | ".join(f"{a:.1%}" if a is not None else "failed" for a in accs)
        print(f"| {name} | {config.frames}×{config.stride} | {config.crop} | {count_flops(config) / 1e9:.3f} | "
              f"{cells} | {means[name]:.1%} | {gap * 100:.1f} pt |")
    print(f"\nspread S - X2D: {(means['S'] - means['X2D']) * 100:.1f} points (chance is 8.3%)")


if __name__ == "__main__":
    main()
