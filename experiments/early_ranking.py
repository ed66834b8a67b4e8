"""How early does a full training rank its models? Spearman's rho between the training loss after each epoch and
the final test top-1, over the models ``search_pays`` trained (issue 28).

Reads every ``OUT/train/*/metrics.json`` (one per config, schedule and training seed), averages each config's
seeds, and prints rho for every epoch. A high rho at epoch 1-2 says that models of one cost trained from scratch
are told apart early, so a short proxy from scratch can compare them at the target (where the samplers compare).

    .venv/bin/python experiments/early_ranking.py runs/search_pays/train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def curves(train_dir: Path) -> pd.DataFrame:
    """One row per config (its seeds averaged): crop, frames, test top-1 and the loss after each epoch."""
    rows = []
    for metrics in sorted(train_dir.glob("*/metrics.json")):
        result = json.loads(metrics.read_text())
        if result.get("status") != "ok" or not (result.get("test") or {}).get("top1"):
            continue
        config = result["config"]
        rows.append({"config": json.dumps(config, sort_keys=True), "crop": config["crop"], "frames": config["frames"],
                     "test_top1": result["test"]["top1"],
                     **{f"loss{i + 1}": loss for i, loss in enumerate(result["epoch_losses"])}})
    table = pd.DataFrame(rows)
    return table.groupby(["config", "crop", "frames"], as_index=False).mean()


def rho(table: pd.DataFrame) -> pd.Series:
    """Spearman's rho of minus each epoch's loss with the test top-1 (Pearson on ranks)."""
    losses = [c for c in table.columns if c.startswith("loss")]
    ranks = table["test_top1"].rank()
    return pd.Series({int(c[4:]): ranks.corr((-table[c]).rank()) for c in losses}, name="rho")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", type=Path, help="search_pays' OUT/train folder")
    args = parser.parse_args()
    table = curves(args.train_dir)
    if len(table) < 3:
        raise SystemExit(f"{args.train_dir}: {len(table)} trained configs with a test score; need 3 or more")
    print(f"{len(table)} configs (seeds averaged)\n")
    print(table[["crop", "frames", "test_top1", "loss1", "loss2"]].sort_values("test_top1").round(3).to_string(index=False))
    print("\n| epoch | rho(-loss, test top-1) |\n|---:|---:|")
    for epoch, value in rho(table).items():
        print(f"| {epoch} | {value:+.2f} |")


if __name__ == "__main__":
    main()
