"""experiments/train_table.py: one row per finished training folder, in percent, unfinished folders left out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "train_table.py"
_SPEC = importlib.util.spec_from_file_location("train_table", _PATH)
train_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(train_table)


def test_rows_hold_test_groups_and_seconds(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({
        "status": "ok", "top1": 0.5, "seconds": 10.0, "cpu_seconds": 8.0,
        "test": {"top1": 0.75, "per_group": {"texture": 0.5, "order": 1.0}}}))
    (tmp_path / "b").mkdir()  # still training: no metrics.json
    frame = train_table.table(tmp_path)
    assert frame.to_dict("records") == [{"run": "a", "status": "ok", "test_top1": 75.0, "texture": 50.0,
                                         "order": 100.0, "val_top1": 50.0, "seconds": 10.0, "cpu_seconds": 8.0}]
    train_table.main([str(tmp_path / "b")])
    assert "no finished training" in capsys.readouterr().out
