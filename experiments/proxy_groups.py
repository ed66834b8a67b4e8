"""What can a proxy training see? Validation top-1 per class group of every proxy trial, by crop (issue 28).

Reads the journals of search run directories and pools their finished trials (every kind: start, expansion,
close-call repeat, look ahead, sampler trial) by crop: how many, their mean top-1, and each class group's mean
and highest validation top-1 (``metrics.val.per_group``, written when the data declares groups). A group whose
best proxy score stays near its share of chance is one the proxy cannot rank models on, whatever the full
training later learns.

    .venv/bin/python experiments/proxy_groups.py runs/search_pays_noflip/expand+cpu_proxy_lean-2g-seed*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from x3dsearch.rundir import RunDir
from x3dsearch.runview import trial_groups
from x3dsearch.trial import Status


def trial_group_scores(run: Path) -> pd.DataFrame:
    """One row per finished trial of a run with per-group validation scores: crop, top-1 and one column per group
    (a torn last journal line is skipped, as every reader of a run skips it)."""
    journal = pd.DataFrame(list(RunDir(run).records()))
    if journal.empty or "status" not in journal:
        return pd.DataFrame()
    ok = journal[journal["status"] == Status.OK]
    groups = trial_groups(ok)
    scored = groups.notna().any(axis=1)  # all False when no trial has group scores
    crops = [config["crop"] for config in ok["config"]]
    return pd.concat([pd.DataFrame({"crop": crops, "top1": ok["top1"]}, index=ok.index), groups], axis=1)[scored]


def by_crop(scores: pd.DataFrame) -> pd.DataFrame:
    """Per crop: trials, mean top-1, and each group's mean and highest score."""
    groups = [c for c in scores.columns if c not in ("crop", "top1")]
    table = scores.groupby("crop").agg(trials=("top1", "size"), top1=("top1", "mean"),
                                       **{f"{g} mean": (g, "mean") for g in groups},
                                       **{f"{g} max": (g, "max") for g in groups})
    return table.reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each with a journal.jsonl)")
    args = parser.parse_args(argv)
    frames = []
    for run in map(Path, args.runs):
        if not (run / "journal.jsonl").is_file():
            print(f"{run}: no journal.jsonl, skipped")
            continue
        frames.append(trial_group_scores(run))
    frames = [f for f in frames if not f.empty]
    if not frames:
        print("no trial with per-group validation scores")
        return 1
    scores = pd.concat(frames, ignore_index=True)
    print(f"{len(scores)} trials from {len(frames)} runs with per-group scores; validation top-1 by crop")
    print(by_crop(scores).round(3).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
