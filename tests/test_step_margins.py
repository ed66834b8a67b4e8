"""experiments/step_margins.py: each step's winner margin against the binomial standard error of a difference."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "step_margins.py"
_SPEC = importlib.util.spec_from_file_location("step_margins", _PATH)
step_margins = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(step_margins)


def _record(step: int, axis: str, top1: float, rung: int = 2, seed_offset: int = 0, kind: str = "expand",
            status: str = "ok") -> str:
    return json.dumps({"kind": kind, "status": status, "step": step, "axis": axis, "rung": rung, "top1": top1,
                       "seed_offset": seed_offset, "metrics": {"val": {"videos": 400}}})


def test_margins_use_the_highest_rung_and_first_seed_and_count_the_close_steps(tmp_path, capsys):
    run = tmp_path / "expand-2g-seed0"
    run.mkdir()
    (run / "journal.jsonl").write_text("\n".join([
        _record(0, "start", 0.9, kind="start"),
        _record(1, "fast", 0.50), _record(1, "width", 0.40), _record(1, "depth", 0.10, status="failed"),
        _record(2, "fast", 0.80, rung=1), _record(2, "width", 0.30, rung=3), _record(2, "depth", 0.28, rung=3),
        _record(2, "width", 0.90, rung=3, seed_offset=1),  # a close call's second seed: not the first score
    ]) + "\n")
    table = step_margins.margins(step_margins.step_scores(run / "journal.jsonl"))
    assert table["step"].tolist() == [1, 2]
    assert table["margin"].tolist() == pytest.approx([0.10, 0.02])
    assert table["std_error"].tolist() == pytest.approx([math.sqrt(2 * 0.45 * 0.55 / 400),
                                                         math.sqrt(2 * 0.29 * 0.71 / 400)])
    assert step_margins.main([str(run), str(tmp_path / "missing")]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 steps under one standard error" in out and "missing: no journal.jsonl, skipped" in out


def test_with_a_look_ahead_a_step_s_candidates_are_those_its_path_lists(tmp_path):
    run = tmp_path / "expand-2g-seed0"
    run.mkdir()
    records = [json.loads(_record(1, "fast", 0.50)), json.loads(_record(1, "width", 0.45)),
               json.loads(_record(2, "fast", 0.90)), json.loads(_record(2, "depth", 0.60)),  # the replaced winner's
               json.loads(_record(2, "width", 0.62)),  # reached from both: trained once, from the replaced winner
               json.loads(_record(2, "depth", 0.64, kind="lookahead")),  # the kept runner-up's own
               json.loads(_record(2, "width", 0.30, kind="lookahead"))]  # its own width step: another config
    for record, key in zip(records, ["F", "W", "FF", "FD", "FW", "WD", "WW"]):
        record["config_key"] = key
    (run / "journal.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    candidates = [[{"config_key": "F"}, {"config_key": "W"}],
                  [{"config_key": "FW"}, {"config_key": "WD"}, {"config_key": "WW"}]]
    (run / "path.json").write_text(json.dumps({"steps": [{"step": k + 1, "config_key": "W", "candidates": c}
                                                         for k, c in enumerate(candidates)]}))
    table = step_margins.margins(step_margins.step_scores(run / "journal.jsonl"))
    assert table["best"].tolist() == pytest.approx([0.50, 0.64])
    assert table["margin"].tolist() == pytest.approx([0.05, 0.02])
