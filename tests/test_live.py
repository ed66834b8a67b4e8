"""The live view's ETA, as printed after each trial: no estimate from start-up-bound trials, a sane one later."""

from __future__ import annotations

import io
import re

from x3dsearch import X3DConfig, count_flops, preset
from x3dsearch.live import LiveView
from x3dsearch.search import Candidate


def _finish(view: LiveView, configs: list[X3DConfig], seconds: float, step: int) -> None:
    """Run a batch of candidates through the view, each taking ``seconds``."""
    batch = [Candidate(step, f"axis{i}", c) for i, c in enumerate(configs)]
    view.batch_started(batch, 0)
    for c in batch:
        view.trial_finished(c, {"status": "ok", "top1": 0.5, "seconds": seconds})


def _printed_eta(stream: io.StringIO) -> str:
    return re.findall(r"ETA (\S+)", stream.getvalue())[-1]


def test_eta_waits_while_trials_are_start_up_bound() -> None:
    stream = io.StringIO()
    view = LiveView(1.0, preset("X2D"), concurrency=1, stream=stream)
    _finish(view, [preset("X2D", crop=120), preset("X2D", crop=128)], 4.0, step=1)
    assert _printed_eta(stream) == "?"


def test_eta_extrapolates_from_the_costliest_trials() -> None:
    stream = io.StringIO()
    view = LiveView(1.0, preset("X2D"), concurrency=1, stream=stream)
    _finish(view, [preset("X2D", crop=120), preset("X2D", crop=128)], 4.0, step=1)
    big = [preset("XS", crop=152), preset("XS", crop=144)]  # about 0.5 GFLOPs each
    _finish(view, big, 24.0, step=2)
    rate = 20.0 / (sum(count_flops(c) for c in big) / 2e9)  # seconds per GFLOP above start-up
    # remaining: one more step of two candidates at twice the latest cost, each plus start-up
    expected = 2 * (2 * max(count_flops(c) for c in big) / 1e9 * rate + 4.0)
    minutes, seconds = re.fullmatch(r"~(\d+)m(\d+)s", _printed_eta(stream)).groups()
    assert abs(60 * int(minutes) + int(seconds) - expected) < 6
