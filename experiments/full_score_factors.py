"""Which architecture factors go with a found model's full-training score? (issue 28, reading search_pays rows)

Reads a ``search_pays.py`` results CSV, averages each model's test top-1 over its training seeds, and prints the
models sorted by that score with their factors, then the Spearman rank correlation of each factor with it.

    .venv/bin/python experiments/full_score_factors.py experiments/results/search_pays_full16.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

FACTORS = ("crop", "frames", "stride", "width", "bottleneck", "depth")


def per_model(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model (run) of the successful search and preset rows: its mean and std of test top-1 over
    training seeds, GFLOPs, params, the six factors and the window (frames x stride)."""
    ok = table[(table["status"] == "ok") & table["kind"].isin(["search", "preset"])]
    models = ok.groupby("run").agg(name=("name", "first"), trainings=("test_top1", "size"),
                                   top1=("test_top1", "mean"), seed_std=("test_top1", "std"),
                                   gflops=("gflops", "first"), params=("params", "first"), config=("config", "first"))
    configs = [json.loads(text) for text in models.pop("config")]
    for factor in FACTORS:
        models[factor] = [config[factor] for config in configs]
    models["window"] = models["frames"] * models["stride"]
    return models.sort_values("top1")


def correlations(models: pd.DataFrame) -> pd.Series:
    """Spearman's rank correlation of each factor (and GFLOPs, params, window) with the mean test top-1."""
    columns = ["gflops", "params", *FACTORS, "window"]
    return models[columns].rank().corrwith(models["top1"].rank())  # Pearson on ranks: no scipy needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a search_pays.py results CSV")
    args = parser.parse_args(argv)
    models = per_model(pd.read_csv(args.results))
    print(models.round(3).to_string())
    print(f"\nSpearman rank correlation with mean test top-1 over {len(models)} models:")
    print(correlations(models).round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
