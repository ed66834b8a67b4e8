"""How sure is each of expansion's choices? Margins of a step's winner over its runner-up (issue 28).

Reads the journals of expansion run directories and, for every forward step, takes each candidate's first-seed
proxy top-1 at the highest rung the step reached; prints the winner's margin over the runner-up beside the
standard error of a difference of two independent binomial proportions on that many validation clips,
sqrt(2 p (1 - p) / n), and counts the steps whose margin is under it. A margin under one standard error is a
choice the validation split cannot tell from a coin flip (unpaired: the two candidates are scored on the same
clips, so the paired error can be somewhat smaller).

    .venv/bin/python experiments/step_margins.py runs/search_pays/expand*-2g-seed*
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def _path_candidates(path_json: Path) -> dict[int, set[str]]:
    """Step -> the config keys of its candidates as ``path.json`` lists them (none for a run without one)."""
    if not path_json.is_file():
        return {}
    steps = json.loads(path_json.read_text()).get("steps", [])
    return {s["step"]: {c["config_key"] for c in s.get("candidates", [])} for s in steps}


def step_scores(journal: Path) -> pd.DataFrame:
    """One row per (step, axis) of the path's own steps: the first-seed top-1 at the step's highest rung and the
    validation clips. A step ``path.json`` lists takes its candidates from there (a look ahead trains others)."""
    listed = _path_candidates(journal.parent / "path.json")
    rows = []
    for line in journal.read_text().splitlines():
        record = json.loads(line)
        if record.get("status") != "ok" or record.get("seed_offset", 0) != 0:
            continue
        keys = listed.get(record.get("step"))
        on_path = record.get("config_key") in keys if keys else record.get("kind") == "expand"
        if record.get("kind") not in ("expand", "lookahead") or not on_path:
            continue
        val = (record.get("metrics") or {}).get("val") or {}
        rows.append({"step": record["step"], "axis": record["axis"], "key": record.get("config_key", record["axis"]),
                     "rung": record.get("rung") or 0, "top1": record["top1"], "videos": val.get("videos")})
    table = pd.DataFrame(rows, columns=["step", "axis", "key", "rung", "top1", "videos"])
    top_rung = table.groupby("step")["rung"].transform("max")  # one row per config: an axis names two after a look
    return table[table["rung"] == top_rung].drop_duplicates(["step", "key"], keep="last").drop(columns="key")


def margins(scores: pd.DataFrame) -> pd.DataFrame:
    """Per step: the best and second top-1, their margin and the binomial standard error of the difference."""
    rows = []
    for step, group in scores.groupby("step"):
        best, second = group["top1"].nlargest(2).tolist() + [math.nan] * max(0, 2 - len(group))
        videos = group["videos"].dropna()
        if math.isnan(second) or videos.empty:
            continue
        p = (best + second) / 2
        rows.append({"step": step, "candidates": len(group), "best": best, "margin": best - second,
                     "std_error": math.sqrt(2 * p * (1 - p) / videos.iloc[0])})
    return pd.DataFrame(rows, columns=["step", "candidates", "best", "margin", "std_error"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="expansion run directories (each with a journal.jsonl)")
    args = parser.parse_args(argv)
    total = under = 0
    for run in args.runs:
        journal = run / "journal.jsonl"
        if not journal.is_file():
            print(f"{run}: no journal.jsonl, skipped")
            continue
        table = margins(step_scores(journal))
        close = int((table["margin"] < table["std_error"]).sum())
        total, under = total + len(table), under + close
        steps = ", ".join(f"{int(r.step)}: {100 * r.margin:.1f}/{100 * r.std_error:.1f}" for r in table.itertuples())
        print(f"{run.name}: {close} of {len(table)} steps under one standard error (step: margin/s.e., points) {steps}")
    if total:
        print(f"\nall runs: {under} of {total} steps ({under / total:.0%}) chose by a margin under one standard error")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
