"""Tabulate finished ``x3dsearch train`` folders: test top-1 and per-group, val top-1, wall and CPU seconds.

    .venv/bin/python experiments/train_table.py runs/item29            # every FOLDER/*/metrics.json under it
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def table(root: Path) -> pd.DataFrame:
    """One row per ``root/*/metrics.json`` of a finished training (percentages, seconds)."""
    rows = []
    for path in sorted(root.glob("*/metrics.json")):
        result = json.loads(path.read_text())
        test = result.get("test") or {}
        rows.append({"run": path.parent.name, "status": result["status"],
                     "test_top1": 100 * test["top1"] if test else None,
                     **{g: 100 * v for g, v in (test.get("per_group") or {}).items()},
                     "val_top1": 100 * result["top1"] if result.get("top1") is not None else None,
                     "seconds": result.get("seconds"), "cpu_seconds": result.get("cpu_seconds")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding training folders")
    args = parser.parse_args(argv)
    frame = table(args.root)
    print(frame.to_string(index=False, float_format="{:.1f}".format) if len(frame) else "no finished training")


if __name__ == "__main__":
    main()
