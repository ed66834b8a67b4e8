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
import json
from pathlib import Path

import pandas as pd


def group_scores(journal: Path) -> pd.DataFrame:
    """One row per finished trial with per-group validation scores: crop, top-1 and one column per group."""
    rows = []
    for line in journal.read_text().splitlines():
        record = json.loads(line)
        groups = (((record.get("metrics") or {}).get("val") or {}).get("per_group")) or {}
        if record.get("status") == "ok" and groups:
            rows.append({"crop": record["config"]["crop"], "top1": record["top1"], **groups})
    return pd.DataFrame(rows)


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
        journal = run / "journal.jsonl"
        if not journal.is_file():
            print(f"{run}: no journal.jsonl, skipped")
            continue
        frames.append(group_scores(journal))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if scores.empty:
        print("no trial with per-group validation scores")
        return 1
    print(f"{len(scores)} trials from {len(frames)} runs; per-group validation top-1 by crop")
    print(by_crop(scores).to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
