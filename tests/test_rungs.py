"""Successive halving and close-call repeats with stub scorers: milliseconds, no Ray."""

from __future__ import annotations

import pytest

from x3dsearch.config import preset
from x3dsearch.errors import ConfigError
from x3dsearch.rungs import Rungs, halving_scorer, successive_halving
from x3dsearch.search import Outcome, choose, run_search, step_candidates
from x3dsearch.space import load_space

SPACE = load_space()
BASE = preset("X2D", num_classes=12)


class RungStub:
    """Top-1 = a per-axis quality x epochs (+ a per-seed wobble); records every (axis, epochs, seed) asked."""

    def __init__(self, quality: dict[str, float], wobble: float = 0.0, fail: str = "") -> None:
        self.quality, self.wobble, self.fail = quality, wobble, fail
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, candidates, epochs, seed):
        out = {}
        for c in candidates:
            self.calls.append((c.axis, epochs, seed))
            if c.axis == self.fail:
                out[c.key] = Outcome("diverged", reason="nan")
            else:
                out[c.key] = Outcome("ok", top1=self.quality[c.axis] * epochs / 10 + self.wobble * (-1) ** seed * seed)
        return out


QUALITY = {"fast": 0.9, "temporal": 0.8, "spatial": 0.7, "depth": 0.3, "width": 0.2, "bottleneck": 0.1}


def test_halving_promotes_the_best_half_and_the_winner_reaches_the_last_rung():
    stub = RungStub(QUALITY)
    cands = step_candidates(BASE, SPACE, 1)
    outcomes = successive_halving(cands, stub, Rungs((1, 2, 4)))
    assert [(a, e) for a, e, _ in stub.calls] == [
        ("fast", 1), ("temporal", 1), ("spatial", 1), ("depth", 1), ("width", 1), ("bottleneck", 1),
        ("fast", 2), ("temporal", 2), ("spatial", 2), ("fast", 4), ("temporal", 4)]
    by_axis = {c.axis: outcomes[c.key] for c in cands}
    assert by_axis["fast"].epochs == 4 and by_axis["spatial"].epochs == 2 and by_axis["width"].epochs == 1
    assert choose(cands, outcomes).axis == "fast"
    # each promotion continues where the rung stopped: 6 x 1 + 3 x 1 + 2 x 2 = 13 epochs, not 6 x 4 = 24
    reached: dict[str, int] = {}
    trained = 0
    for axis, epochs, _ in stub.calls:
        trained += epochs - reached.get(axis, 0)
        reached[axis] = epochs
    assert trained == 13


def test_a_higher_rung_beats_a_higher_score_at_a_lower_rung():
    cands = step_candidates(BASE, SPACE, 1)[:2]
    outcomes = {cands[0].key: Outcome("ok", top1=0.9, epochs=1), cands[1].key: Outcome("ok", top1=0.5, epochs=2)}
    assert choose(cands, outcomes) == cands[1]


def test_failed_candidates_are_not_promoted():
    stub = RungStub(QUALITY, fail="fast")
    cands = step_candidates(BASE, SPACE, 1)
    outcomes = successive_halving(cands, stub, Rungs((1, 3)))
    assert [a for a, e, _ in stub.calls if e == 3] == ["temporal", "spatial", "depth"]
    assert outcomes[cands[0].key].status == "diverged" and choose(cands, outcomes).axis == "temporal"


def test_close_calls_are_repeated_with_other_seeds_and_ranked_by_the_mean():
    quality = dict(QUALITY, temporal=0.89)  # within 0.01 of fast at 2 epochs
    stub = RungStub(quality, wobble=0.05)  # seed 1: -0.05 for both
    cands = step_candidates(BASE, SPACE, 1)
    outcomes = successive_halving(cands, stub, Rungs((1, 2), close_call=0.03, repeats=2))
    repeats = [(a, s) for a, e, s in stub.calls if s > 0]
    assert repeats == [("fast", 1), ("temporal", 1), ("fast", 2), ("temporal", 2)]
    fast = outcomes[cands[0].key]
    assert fast.seeds == 3 and fast.top1 == pytest.approx((0.18 + 0.13 + 0.28) / 3)
    # a clear call is not repeated
    stub = RungStub(QUALITY, wobble=0.05)
    successive_halving(cands, stub, Rungs((1, 2), close_call=0.01, repeats=2))
    assert all(s == 0 for _, _, s in stub.calls)


def test_a_score_other_than_top1_ranks_promotes_and_settles_close_calls_by_its_mean():
    def by_nll(candidates, epochs, seed):  # top-1 favours fast, minus the NLL favours spatial then temporal
        nll = {"fast": 2.5, "temporal": 1.5, "spatial": 1.49 - 0.02 * seed}
        return {c.key: Outcome("ok", top1=QUALITY[c.axis], score=-nll.get(c.axis, 2.2)) for c in candidates}

    cands = step_candidates(BASE, SPACE, 1)
    outcomes = successive_halving(cands, by_nll, Rungs((1, 2), close_call=0.02, repeats=1))
    assert choose(cands, outcomes).axis == "spatial"
    spatial = next(outcomes[c.key] for c in cands if c.axis == "spatial")
    assert spatial.seeds == 2 and spatial.score == pytest.approx(-1.48) and spatial.top1 == pytest.approx(0.7)
    assert outcomes[cands[0].key].epochs == 1  # fast, best by top-1, fell at the first rung


def test_a_search_with_halving_follows_the_best_axis_at_the_top_rung():
    stub = RungStub(QUALITY)
    result = run_search(SPACE, 0.05, halving_scorer(stub, Rungs((1, 2))), train_start=False)
    assert all(s.chosen.axis == "fast" for s in result.steps)
    assert all(s.outcomes[s.chosen.key].epochs == 2 for s in result.steps)


@pytest.mark.parametrize("epochs,keep", [((), 0.5), ((2, 1), 0.5), ((0, 2), 0.5), ((1, 2), 0.0), ((1, 2), 1.5)])
def test_bad_rungs_are_refused(epochs, keep):
    with pytest.raises(ConfigError):
        Rungs(epochs, keep)
