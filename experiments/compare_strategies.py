"""Progressive expansion vs Optuna on the synthetic benchmark, at the same proxy budget.

For each seed: ``x3dsearch expand`` to the target, then ``x3dsearch search --strategy
optuna`` with as many proxy trainings as expand used. Each pair is compared at the smaller
of the two proxy computes (CPU-seconds); the script prints per-seed results, the mean
difference and the winner, and writes ``OUT/compare.png`` and ``OUT/compare.csv``.

    .venv/bin/python experiments/compare_strategies.py --target-gflops 0.3 --seeds 0 1 2

Re-running resumes every run from its journal (and study). On 2 CPU cores the defaults
take roughly 30-40 minutes with the cpu_proxy schedule.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from x3dsearch.compare import compare_runs, proxy_trials
from x3dsearch.rundir import RunDir, load_run


def _x3dsearch(args: list[str]) -> None:
    """Run one CLI command in its own process (its own Ray), failing loudly."""
    command = [sys.executable, "-m", "x3dsearch.cli", *args]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def _common(out: Path, seed: int, args: argparse.Namespace) -> list[str]:
    flags = ["--target-gflops", str(args.target_gflops), "--output", str(out), "--seed", str(seed),
             "--no-final-training", "--quiet", "--cpus-per-worker", str(args.cpus_per_trial)]
    flags += ["--data", args.data] if args.data else []
    flags += ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    return flags + (["--resume"] if RunDir(out).exists() else [])


def _trainings(run: Path) -> int:
    return len(proxy_trials(load_run(run), 1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-gflops", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe")
    parser.add_argument("--trials", type=int, help="optuna proxy trainings (default: as many as expand used)")
    parser.add_argument("--data", help="dataset folder (default: the synthetic benchmark)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--max-concurrent", type=int)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_strategies"))
    args = parser.parse_args(argv)

    rows, runs = [], []
    for seed in args.seeds:
        expand, optuna = args.out / f"expand-seed{seed}", args.out / f"optuna-{args.sampler}-seed{seed}"
        _x3dsearch(["expand", *_common(expand, seed, args)])
        trials = args.trials or _trainings(expand)
        _x3dsearch(["search", "--strategy", "optuna", "--sampler", args.sampler, "--trials", str(trials),
                    *_common(optuna, seed, args)])
        pair, _ = compare_runs([expand, optuna], out=args.out / f"compare-seed{seed}.png")
        rows.append(pair.assign(seed=seed))
        runs += [expand, optuna]
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(args.out / "compare.csv", index=False)
    _, plot = compare_runs(runs, out=args.out / "compare.png")
    print(table[["seed", "strategy", "trials", "compute_s", "common_budget_s", "best_top1_at_common",
                 "best_top1_final"]].to_string(index=False))
    wide = table.pivot(index="seed", columns="strategy", values="best_top1_at_common")
    diff = wide["optuna"] - wide["expand"]
    winner = "optuna" if diff.mean() > 0 else "expand" if diff.mean() < 0 else "neither"
    print(f"\nbest proxy top-1 at <= {args.target_gflops:g} GFLOPs at equal proxy compute, per seed "
          f"(optuna - expand): {', '.join(f'{d:+.3f}' for d in diff)}")
    print(f"mean {diff.mean():+.3f} (std {diff.std(ddof=1) if len(diff) > 1 else float('nan'):.3f}, "
          f"optuna wins {int((diff > 0).sum())}/{len(diff)} seeds): {winner} wins; plot {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
