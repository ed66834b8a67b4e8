"""Where a search run's wall time went, from its run directory: start-up, each step, contraction, final training.

Per step: wall time from its first trial's start to its last trial's end, the trials' summed seconds
and the slot utilisation (summed / (wall x slots)); gaps between steps are dispatch and coordinator
time; start-up is from the run directory's creation to the first trial's start (Ray start, data).

    .venv/bin/python experiments/run_split.py runs/demo [--slots 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from x3dsearch import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--slots", type=int, default=2, help="trials that could run at once (default: 2)")
    args = parser.parse_args()
    journal = load_run(args.run)
    created = (args.run / "run.yaml").stat().st_mtime
    rows, previous_end = [], None
    for step, trials in journal.groupby("step", sort=True):
        start, end = trials["started"].min(), trials["ended"].max()
        gap = start - (created if previous_end is None else previous_end)
        wall = end - start
        rows.append((f"step {step}", gap, wall, trials["seconds"].sum(), trials["seconds"].sum() / (wall * args.slots)))
        previous_end = end
    print(f"{'phase':<10}{'gap before s':>14}{'wall s':>9}{'trial s':>9}{'slot use':>10}")
    for name, gap, wall, busy, use in rows:
        print(f"{name:<10}{gap:>14.1f}{wall:>9.1f}{busy:>9.1f}{use:>10.0%}")
    metrics = args.run / "final" / "metrics.json"
    summary = json.loads((args.run / "summary.json").read_text())
    final = json.loads(metrics.read_text())["seconds"] if metrics.is_file() else 0.0
    search_wall = previous_end - created
    print(f"start-up (run dir to first trial): {rows[0][1]:.1f} s; search incl. contraction: {search_wall:.1f} s "
          f"(coordinator reports {summary['search_seconds']:.1f} s); final training and testing: {final:.1f} s")


if __name__ == "__main__":
    main()
