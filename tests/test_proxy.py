"""x3dsearch.proxy: what one proxy training reports about itself."""

from __future__ import annotations

import itertools

from x3dsearch import proxy
from x3dsearch.config import preset
from x3dsearch.recipe import Recipe
from x3dsearch.train import TrainResult
from x3dsearch.trial import TrialJob


def test_a_rung_reports_its_own_seconds_and_cpu_time_not_its_trainings_so_far(tmp_path, monkeypatch):
    clock = itertools.count(100.0, 7.0)  # the call's CPU time: 107 - 100
    monkeypatch.setattr(proxy, "cpu_time", lambda: next(clock))
    # a continued rung: the training's result counts the earlier rungs' seconds too
    monkeypatch.setattr(proxy, "train", lambda *args, **kwargs: TrainResult("ok", top1=0.5, seconds=600.0,
                                                                            cpu_seconds=500.0))
    job = TrialJob(key="k", config=preset("X2D", num_classes=4).to_dict(), recipe=Recipe().to_dict(),
                   data=str(tmp_path), seed=0, trials_dir=str(tmp_path / "trials"), stop_epochs=2)
    metrics = proxy.run_proxy(job)
    assert metrics["cpu_seconds"] == 7.0 and metrics["top1"] == 0.5
    assert 0 <= metrics["seconds"] < 60  # this call's wall time, not the 600 s of the training so far
