"""Does a longer proxy training widen a step's signal? Retrain one fidelity set's candidates from the kept base.

``experiments/proxy_fidelity.py`` keeps each step run's base weights. This trains the set's six
candidates from them exactly as the step did (inheriting, the step's ``cpu_proxy`` schedule and
seed), but for ``--epochs`` each, and ranks them against the same reference as
``proxy_evaluation.py``. ``--epochs 2`` at XS is the step itself: its scores must equal the
journal's first-seed scores (checked whenever they are retrained), and the journal's scores
are the baseline row. Results are cached in ``--out``.

    .venv/bin/python experiments/proxy_length.py runs/fidelity-gate/cpu_proxy-inherit --set XS --epochs 6
    .venv/bin/python experiments/proxy_length.py runs/fidelity-gate/cpu_proxy-inherit --set XS --epochs 2 --seeds 0  # the check
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import torch

from proxy_fidelity import (RESULTS, candidate_sets, journal_scores, judge, reference_means, results_writer,
                            run_mirrored)
from x3dsearch import count_flops
from x3dsearch.data.kinetics import read_split
from x3dsearch.data.synthetic import default_dataset
from x3dsearch.inherit import inherit
from x3dsearch.proxy import weights_file
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule
from x3dsearch.train import train

_FIELDS = ["run", "axis", "epochs", "top1", "seconds"]


def _step_schedule(name: str) -> Recipe:
    """The cpu_proxy recipe of a set's step, as the search gives it (by cost and training clips)."""
    clips = len(read_split(default_dataset(), "train").videos)
    return load_schedule("cpu_proxy").for_step(2 * count_flops(candidate_sets()[name][0]) / 1e9, clips).recipe


def _job(job: tuple[str, str, str, int, int]) -> dict[str, object]:
    """Train one candidate ``epochs`` long from the run's kept base, as the step trained it."""
    run, name, axis, epochs, seed = job
    base, candidates = candidate_sets()[name]
    config = candidates[axis]
    step = _step_schedule(name)
    schedule = step.stretched(epochs)
    parent = torch.load(weights_file(Path(run) / "weights", base.key), map_location="cpu", weights_only=True)
    result = train(config, default_dataset(), schedule, seed=seed, progress=False, threads=1,
                   init_state=inherit(parent, base, config, seed=seed))
    return {"run": run, "axis": axis, "epochs": epochs, "top1": result.top1, "seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a proxy_fidelity variant folder (holding SET-seedN step runs)")
    parser.add_argument("--set", default="XS", choices=list(candidate_sets()))
    parser.add_argument("--epochs", type=int, nargs="+", default=[6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the step runs' seeds to retrain")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "proxy_length.csv"), help="score cache (resumable)")
    args = parser.parse_args()
    runs = [Path(args.folder) / f"{args.set}-seed{seed}" for seed in args.seeds]
    if any(run_mirrored(run) for run in runs):
        sys.exit(f"{args.folder} holds step runs of before 2026-12-06, which mirrored their clips: the lengths "
                 "trained now would not")
    references = reference_means()
    if args.set not in references:
        sys.exit(f"no complete reference of set {args.set} in the cache: train it with proxy_fidelity.py "
                 f"--reference-only --sets {args.set}")
    reference = references[args.set]
    out = Path(args.out)
    done: dict[tuple[str, str, int], float] = {}
    if out.is_file():
        with open(out, newline="") as f:
            done = {(r["run"], r["axis"], int(r["epochs"])): float(r["top1"]) for r in csv.DictReader(f)}
    jobs = [(str(run), args.set, axis, epochs, int(run.name.rsplit("-seed", 1)[1]))
            for epochs in args.epochs for run in runs for axis in reference
            if (str(run), axis, epochs) not in done]
    with results_writer(out, _FIELDS) as write, mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(_job, jobs):
            write(row)
            done[(row["run"], row["axis"], row["epochs"])] = row["top1"]
            print(f"{row['run']} +{row['axis']} {row['epochs']} epochs: top1 {row['top1']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    step_epochs = _step_schedule(args.set).epochs
    print(f"\n{args.set}: reference spread {(max(reference.values()) - min(reference.values())) * 100:.1f} points; "
          f"the step trains {step_epochs} epochs (its journal's first-seed scores)")
    print("| epochs | run | tau | choice's reference rank | regret (points) | proxy spread (points) |")
    print("|---|---|---|---|---|---|")
    for epochs in dict.fromkeys([step_epochs, *args.epochs]):
        rows = []
        for run in runs:
            journal = {axis: s[0] for axis, s in journal_scores(run).items()}
            if epochs == step_epochs:
                retrained = {a: done[(str(run), a, epochs)] for a in reference if (str(run), a, epochs) in done}
                if any(abs(v - journal[a]) > 1e-9 for a, v in retrained.items()):
                    raise SystemExit(f"{run}: retraining does not reproduce the journal ({retrained} vs {journal})")
                scores = journal
            elif all((str(run), a, epochs) in done for a in reference):
                scores = {a: done[(str(run), a, epochs)] for a in reference}
            else:
                continue
            rows.append(judge(scores, reference))
            spread = (max(scores.values()) - min(scores.values())) * 100
            print(f"| {epochs} | {run.name} | {rows[-1]['tau']:+.2f} | {rows[-1]['winner_rank']} | "
                  f"{rows[-1]['regret']:.1f} | {spread:.1f} |")
        if rows:
            print(f"| {epochs} | mean | {np.mean([r['tau'] for r in rows]):+.2f} | "
                  f"{sum(r['winner_rank'] <= 2 for r in rows)} of {len(rows)} in the top 2 | "
                  f"{np.mean([r['regret'] for r in rows]):.1f} | |")


if __name__ == "__main__":
    main()
