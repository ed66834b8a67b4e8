"""Would a better evaluation make the proxy faithful? Re-score a fidelity run's kept weights, no retraining.

``experiments/proxy_fidelity.py`` keeps every candidate's proxy-trained weights (first seed) in its
step runs. This re-scores them under other evaluations and ranks them against the same reference:

* ``own``: the proxy's own 360 val clips, one view (the search's evaluation; must reproduce the
  journal's first-seed top-1, which checks the re-scoring);
* ``views``: the same clips, ``--views`` (temporal windows x spatial crops, softmax averaged);
* ``pool``: 5.2x the clips, one view: the own val clips plus the reference copy's 360 val and 1152
  train clips (never seen by a proxy; the reference's own scores come from other networks).

It also reads, from the runs' journals, how far a second seed moved a candidate's score (the
close-call repeats) and how wide the proxy's scores spread against the reference's. Scores are
cached in ``--out`` (resumable). Tau, the reference rank of the first-seed choice and regret are
those of ``proxy_fidelity.py``, on first-seed scores (a close call's repeat kept no weights).

    .venv/bin/python experiments/proxy_evaluation.py runs/fidelity/cpu_proxy-inherit [more run folders]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from proxy_fidelity import (MIRRORED_HELP, RESULTS, candidate_sets, journal_scores, judge, reference_data,
                            reference_means, results_writer, run_mirrored)
from x3dsearch import X3DConfig
from x3dsearch.data import VideoDataset
from x3dsearch.data.synthetic import default_dataset
from x3dsearch.evaluate import Feed, evaluate_views
from x3dsearch.model import build_model
from x3dsearch.proxy import weights_file
from x3dsearch.schedule import load_schedule

_FIELDS = ["run", "axis", "evaluation", "top1", "clips"]


def _datasets(evaluation: str, views: tuple[int, int]) -> list[tuple[Path, str, tuple[int, int]]]:
    """(root or CSV, split read in eval mode, views) of each part of an evaluation."""
    own = (default_dataset(), "val", (1, 1))
    if evaluation == "own":
        return [own]
    if evaluation == "views":
        return [(default_dataset(), "val", views)]
    ref = reference_data()
    return [own, (ref, "val", (1, 1)), (ref / "train.csv", "val", (1, 1))]  # train.csv's clips, eval sampling


def _score(run: Path, config: X3DConfig, evaluation: str, views: tuple[int, int]) -> tuple[float, int]:
    """Top-1 over all parts of an evaluation (clip-weighted) of one candidate's kept weights."""
    schedule = load_schedule("cpu_proxy").recipe
    model = build_model(config)
    model.load_state_dict(torch.load(weights_file(run / "weights", config.key), map_location="cpu", weights_only=True))
    model = model.to(memory_format=torch.channels_last_3d)
    feed = Feed(seed=0, num_workers=0, device=torch.device("cpu"), channels_last=True,
                autocast=contextlib.nullcontext())
    scaled = config.replace(crop=schedule.train_crop(config))
    correct = clips = 0
    for root, split, part_views in _datasets(evaluation, views):
        data = VideoDataset(root, scaled, split=split, cache_dir=True, views=part_views)
        top1, _ = evaluate_views(model, data, feed, schedule.batch_size, data.views[0] * data.views[1])
        correct, clips = correct + top1 * len(data), clips + len(data)
    return correct / clips, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="proxy_fidelity variant folders (holding SET-seedN step runs)")
    parser.add_argument("--views", default="3x1", help="windows x crops of the 'views' evaluation (default 3x1)")
    parser.add_argument("--out", default=str(RESULTS / "proxy_evaluation.csv"), help="score cache (resumable)")
    parser.add_argument("--mirrored-reference", action="store_true", help=MIRRORED_HELP)
    args = parser.parse_args()
    views = tuple(int(v) for v in args.views.split("x"))
    torch.set_num_threads(1)
    reference = reference_means(mirrored=args.mirrored_reference)
    if not reference:
        sys.exit("no complete reference in the cache: train one with proxy_fidelity.py --reference-only (or pass "
                 "--mirrored-reference for the references of before 2026-12-06)")
    out = Path(args.out)
    cached: dict[tuple[str, str, str], float] = {}
    if out.is_file():
        with open(out, newline="") as f:
            cached = {(r["run"], r["axis"], r["evaluation"]): float(r["top1"]) for r in csv.DictReader(f)}
    evaluations = ["own", f"views {args.views}", "pool"]
    runs = sorted(run for folder in args.folders for run in Path(folder).glob("*-seed*") if (run / "step.json").is_file()
                  and run_mirrored(run) == args.mirrored_reference)  # a run and its reference mirrored alike
    judged: dict[str, list[tuple[str, dict[str, float]]]] = {e: [] for e in evaluations}
    repeats: dict[str, list[float]] = {}
    spreads: dict[str, list[float]] = {}
    sets = candidate_sets()
    with results_writer(out, _FIELDS) as write:
        for run in runs:
            name = run.name.rsplit("-seed", 1)[0]
            if name not in reference:
                continue
            journal = journal_scores(run)
            for evaluation in evaluations:
                scores = {}
                for axis, config in sets[name][1].items():
                    key = (str(run), axis, evaluation)
                    if key not in cached:
                        cached[key], clips = _score(run, config, evaluation.split()[0], views)
                        write(dict(zip(_FIELDS, (*key, cached[key], clips))))
                    scores[axis] = cached[key]
                if evaluation == "own":
                    mismatch = [a for a in scores if abs(scores[a] - journal[a][0]) > 1e-9]
                    if mismatch:
                        raise SystemExit(f"{run}: re-scoring does not reproduce the journal for {mismatch}")
                    spreads.setdefault(name, []).append(max(scores.values()) - min(scores.values()))
                judged[evaluation].append((name, judge(scores, reference[name])))
            repeats.setdefault(name, []).extend(s[1] - s[0] for s in journal.values() if 1 in s)
            print(f"scored {run}", flush=True)
    print("\n| evaluation | set | mean tau | first-seed choice in the reference top 2 | mean regret (points) |")
    print("|---|---|---|---|---|")
    for evaluation, rows in judged.items():
        for name in [*reference, "all"]:
            sel = [j for n, j in rows if name in (n, "all")]
            if sel:
                print(f"| {evaluation} | {name} | {np.mean([j['tau'] for j in sel]):+.2f} | "
                      f"{sum(j['winner_rank'] <= 2 for j in sel)} of {len(sel)} | "
                      f"{np.mean([j['regret'] for j in sel]):.1f} |")
    print("\nSeed noise and spread (first-seed scores; points):")
    for name, ref in reference.items():
        diffs = np.array(repeats.get(name, [])) * 100  # second seed minus first, of the step's top two
        noise = (f"{len(diffs)} close-call repeats moved a score by {np.sqrt(np.mean(diffs ** 2)):.1f} rms "
                 f"(second seed minus first: mean {diffs.mean():+.1f})") if len(diffs) else "no repeats"
        print(f"  {name}: {noise}; proxy spread {np.mean(spreads.get(name, [np.nan])) * 100:.1f} "
              f"against the reference's {(max(ref.values()) - min(ref.values())) * 100:.1f}")


if __name__ == "__main__":
    main()
