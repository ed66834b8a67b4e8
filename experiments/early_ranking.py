"""How early does a full training rank its models? Spearman's rho between the training loss after each epoch and
the final test top-1, over the models ``search_pays`` trained (issue 28).

Reads ``OUT/train/*/metrics.json`` (one per config, schedule and training seed) of one full schedule, keeps the
configs of the given rows of a results CSV, averages each config's seeds, and prints rho for every epoch. A high
rho at epoch 1-2 says that models of one cost trained from scratch are told apart early, so a short proxy from
scratch can compare them at the target (where the samplers compare). The model set comes from the CSV, so
trainings added to the folder later do not change the answer. The 12 found models of levers 2-5:

    .venv/bin/python experiments/early_ranking.py runs/search_pays/train \
        --results experiments/results/search_pays_full16.csv \
        --names expand+scratch expand+cpu_proxy_x3+scratch expand+cpu_proxy_x3 expand+step2x
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Collection

import pandas as pd


def _key(config: dict | str) -> str:
    return json.dumps(json.loads(config) if isinstance(config, str) else config, sort_keys=True)


def configs_of(results: Path, names: Collection[str]) -> set[str]:
    """The configs (canonical JSON) of the rows of a ``search_pays`` results CSV named ``names``."""
    table = pd.read_csv(results)
    missing = sorted(set(names) - set(table["name"]))
    if missing:
        raise SystemExit(f"{results}: no rows named {', '.join(missing)}")
    return {_key(c) for c in table.loc[table["name"].isin(names), "config"]}


# the same 16-epoch schedule under its two names: an experiment file until 2026-12-06, shipped since
LONG_FULL = ("cpu_full_16", "cpu_long_full")


def curves(train_dir: Path, schedules: Collection[str] = LONG_FULL, configs: Collection[str] | None = None) -> pd.DataFrame:
    """One row per config trained with one of ``schedules`` (its seeds averaged; only ``configs`` when given):
    crop, frames, test top-1 and the loss after each epoch."""
    rows = []
    for metrics in sorted(train_dir.glob("*/metrics.json")):
        result = json.loads(metrics.read_text())
        if (result.get("status") != "ok" or not (result.get("test") or {}).get("top1")
                or result.get("schedule") not in schedules):
            continue
        config = result["config"]
        if configs is not None and _key(config) not in configs:
            continue
        rows.append({"config": _key(config), "crop": config["crop"], "frames": config["frames"],
                     "test_top1": result["test"]["top1"],
                     **{f"loss{i + 1}": loss for i, loss in enumerate(result["epoch_losses"])}})
    table = pd.DataFrame(rows)
    return table.groupby(["config", "crop", "frames"], as_index=False).mean() if rows else table


def rho(table: pd.DataFrame) -> pd.Series:
    """Spearman's rho of minus each epoch's loss with the test top-1 (Pearson on ranks)."""
    losses = [c for c in table.columns if c.startswith("loss")]
    ranks = table["test_top1"].rank()
    return pd.Series({int(c[4:]): ranks.corr((-table[c]).rank()) for c in losses}, name="rho")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", type=Path, help="search_pays' OUT/train folder")
    parser.add_argument("--schedules", nargs="+", default=list(LONG_FULL),
                        help="the full schedules whose trainings count (default: %(default)s, one schedule's two names)")
    parser.add_argument("--results", type=Path, help="a search_pays results CSV whose rows name the models")
    parser.add_argument("--names", nargs="+", help="the rows of --results (strategy names) whose models count")
    args = parser.parse_args()
    if (args.results is None) != (args.names is None):
        parser.error("--results and --names go together")
    configs = configs_of(args.results, args.names) if args.results is not None else None
    table = curves(args.train_dir, args.schedules, configs)
    if len(table) < 3:
        raise SystemExit(f"{args.train_dir}: {len(table)} trained configs with a test score; need 3 or more")
    print(f"{len(table)} configs (seeds averaged)\n")
    print(table[["crop", "frames", "test_top1", "loss1", "loss2"]].sort_values("test_top1").round(3).to_string(index=False))
    print("\n| epoch | rho(-loss, test top-1) |\n|---:|---:|")
    for epoch, value in rho(table).items():
        print(f"| {epoch} | {value:+.2f} |")


if __name__ == "__main__":
    main()
