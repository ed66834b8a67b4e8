"""experiments/full_score_factors.py: one row per model from search_pays rows, and its rank correlations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "full_score_factors.py"
_SPEC = importlib.util.spec_from_file_location("full_score_factors", _PATH)
factors = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(factors)


def _row(kind: str, run: str, top1: float, crop: int, width: float, status: str = "ok") -> dict:
    config = {"crop": crop, "frames": 8, "stride": 4, "width": width, "bottleneck": 1.0, "depth": 2.2}
    return {"kind": kind, "name": run.split("-")[0], "run": run, "status": status, "test_top1": top1,
            "gflops": 1.0, "params": 1e6 * width, "config": json.dumps(config)}


def test_models_are_averaged_over_training_seeds_and_their_factors_ranked():
    rows = [_row("search", "a-2g-seed0", 0.50, 112, 4.0), _row("search", "a-2g-seed0", 0.60, 112, 4.0),
            _row("search", "b-2g-seed0", 0.70, 224, 2.0), _row("preset", "S-2g", 0.80, 320, 1.0),
            _row("search", "c-2g-seed0", 0.95, 320, 1.0, status="failed"),
            _row("pipeline", "p-2g-seed0", 0.99, 320, 1.0)]  # failed and pipeline rows left out
    models = factors.per_model(pd.DataFrame(rows))
    assert list(models.index) == ["a-2g-seed0", "b-2g-seed0", "S-2g"]  # sorted by mean top-1
    assert models.loc["a-2g-seed0", "top1"] == pytest.approx(0.55)
    assert models.loc["a-2g-seed0", "trainings"] == 2 and models.loc["b-2g-seed0", "window"] == 32
    correlation = factors.correlations(models)
    assert correlation["crop"] == pytest.approx(1.0) and correlation["width"] == pytest.approx(-1.0)
