"""experiments/proxy_groups.py: proxy trials' per-group validation scores pooled by crop."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "proxy_groups.py"
_SPEC = importlib.util.spec_from_file_location("proxy_groups", _PATH)
proxy_groups = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(proxy_groups)


def _record(crop: int, top1: float, texture: float, flicker: float, status: str = "ok") -> str:
    return json.dumps({"status": status, "config": {"crop": crop}, "top1": top1,
                       "metrics": {"val": {"per_group": {"texture": texture, "flicker": flicker}}}})


def test_trials_pool_by_crop_with_each_group_s_mean_and_best(tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
    (runs[0] / "journal.jsonl").write_text("\n".join([
        _record(112, 0.2, 0.10, 0.30), _record(160, 0.4, 0.20, 0.60),
        _record(112, 0.9, 0.90, 0.90, status="failed"),  # not a finished trial: left out
        json.dumps({"status": "ok", "config": {"crop": 112}, "top1": 0.5, "metrics": {}}),  # no groups: left out
        json.dumps({"status": "failed", "config": {"crop": 112}, "top1": None, "metrics": None}),
    ]) + "\n")
    (runs[1] / "journal.jsonl").write_text(_record(112, 0.4, 0.30, 0.10) + "\n" + _record(112, 0.9, 0.9, 0.9)[:40])
    table = proxy_groups.by_crop(pd.concat([proxy_groups.trial_group_scores(r) for r in runs],
                                               ignore_index=True))  # the torn last line of run b is skipped
    assert table["crop"].tolist() == [112, 160]
    assert table["trials"].tolist() == [2, 1]
    assert table["top1"].tolist() == pytest.approx([0.3, 0.4])
    assert table["texture mean"].tolist() == pytest.approx([0.2, 0.2])
    assert table["texture max"].tolist() == pytest.approx([0.3, 0.2])
    assert table["flicker max"].tolist() == pytest.approx([0.3, 0.6])
    assert proxy_groups.main([str(r) for r in runs] + [str(tmp_path / "missing")]) == 0
    out = capsys.readouterr().out
    assert "3 trials from 2 runs with per-group scores" in out and "missing: no journal.jsonl, skipped" in out


def test_runs_without_group_scores_say_so(tmp_path, capsys):
    (tmp_path / "journal.jsonl").write_text(json.dumps({"status": "ok", "config": {"crop": 112}, "top1": 0.5}) + "\n")
    assert proxy_groups.main([str(tmp_path)]) == 1
    assert "no trial with per-group validation scores" in capsys.readouterr().out

