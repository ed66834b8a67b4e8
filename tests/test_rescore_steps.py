"""experiments/rescore_steps.py: each step's choice by top-1 and by NLL of the saved candidate weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from x3dsearch.config import preset
from x3dsearch.proxy import weights_file
from x3dsearch.scores import Scores

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "rescore_steps.py"
_SPEC = importlib.util.spec_from_file_location("rescore_steps", _PATH)
rescore_steps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rescore_steps)


def test_each_step_names_its_best_axis_by_top1_and_by_nll(tmp_path: Path) -> None:
    base = preset("X2D", num_classes=4)
    configs = {"temporal": base.replace(frames=2), "width": base.replace(width=2.0), "depth": base.replace(depth=2.2)}
    scores = {"temporal": (0.5, 2.0), "width": (0.4, 1.9), "depth": (0.3, 2.1)}  # top-1 and NLL disagree
    (tmp_path / "weights").mkdir()
    for axis, config in configs.items():
        weights_file(tmp_path / "weights", config.key).write_bytes(b"")
    missing = base.replace(crop=160)  # no saved weights: left out
    candidates = [{"axis": a, "config_key": c.key, "status": "ok"} for a, c in configs.items()]
    candidates.append({"axis": "spatial", "config_key": missing.key, "status": "ok"})
    steps = [{"step": 1, "axis": "temporal", "candidates": candidates}]
    (tmp_path / "path.json").write_text(json.dumps({"steps": steps}))
    by_key = {c.key: a for a, c in configs.items()}

    def scorer(config, weights):
        top1, nll = scores[by_key[config.key]]
        return Scores("val", top1, 1.0, ((1,),), ("a",), nll=nll)

    assert rescore_steps.rescore(tmp_path, scorer) == [
        {"step": 1, "chosen": "temporal", "by_top1": "temporal", "by_nll": "width"}]
