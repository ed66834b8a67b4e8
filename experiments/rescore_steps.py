"""Would another ranking have chosen differently? Re-score every step's candidates of finished expansion runs from their
saved proxy weights, by val top-1 and by val NLL, and print each step's choice under both (issue 28, lever 7).

Each candidate's weights are the ones its step saved (``RUN/weights``, the first seed), scored on ``--data``'s val split
as the proxy scores them. Only a path's first differing step is a true counterfactual: after it, another ranking would
have expanded another base.

    .venv/bin/python experiments/rescore_steps.py runs/search_pays_val90/expand-2g-seed* \\
        --data ~/.cache/x3dsearch/synthetic-small-seed0-val90-test30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import torch

from x3dsearch.config import X3DConfig
from x3dsearch.proxy import weights_file
from x3dsearch.schedule import load_schedule
from x3dsearch.scores import Scores
from x3dsearch.train import evaluate_weights

Scorer = Callable[[X3DConfig, Path], Scores]


def rescore(run: Path, scorer: Scorer) -> list[dict[str, Any]]:
    """Per forward step of ``run``'s path: the axis chosen, and the best axis by top-1 and by NLL of the saved
    weights."""
    steps = []
    for step in json.loads((run / "path.json").read_text())["steps"]:
        rows = []
        for c in step["candidates"]:
            weights = weights_file(run / "weights", c["config_key"])
            if c["status"] == "ok" and weights.is_file():
                scores = scorer(X3DConfig.from_dict(json.loads(c["config_key"])), weights)
                rows.append((c["axis"], scores.top1, scores.nll))
        if rows:
            steps.append({"step": step["step"], "chosen": step["axis"], "by_top1": max(rows, key=lambda r: r[1])[0],
                          "by_nll": min(rows, key=lambda r: r[2])[0]})
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="expansion run directories")
    parser.add_argument("--data", required=True, help="the data the runs searched on")
    parser.add_argument("--schedule", default="cpu_proxy", help="the proxy schedule the runs used (input size, views)")
    args = parser.parse_args()
    recipe = load_schedule(args.schedule).recipe

    def scorer(config: X3DConfig, weights: Path) -> Scores:
        return evaluate_weights(config, torch.load(weights, map_location="cpu"), args.data, recipe, "val", threads=1)

    print("| run | step | chosen | best by top-1 | best by NLL |\n|---|---:|---|---|---|")
    differ = total = 0
    for run in args.runs:
        for s in rescore(run, scorer):
            total += 1
            differ += s["by_nll"] != s["chosen"]
            print(f"| {run.name} | {s['step']} | {s['chosen']} | {s['by_top1']} | {s['by_nll']} |")
    print(f"\n{differ} of {total} steps would have chosen another axis by NLL")


if __name__ == "__main__":
    main()
