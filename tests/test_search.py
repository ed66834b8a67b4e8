"""The coordinator with stub scorers: exact greedy paths, memoisation, contraction, ceiling, ties."""

import json
from dataclasses import replace

import pytest

from x3dsearch import ConfigError, X3DConfig, count_flops, count_params, expand, preset
from x3dsearch.errors import SearchError
from x3dsearch.search import (Outcome, Ties, check_reachable, choose, contract, land, longer_window_over, offer,
                              run_search, step_candidates)
from x3dsearch.space import load_space, window

SPACE = load_space()
UNBOUNDED = replace(SPACE, bounds=None)  # the operators alone, for tests of bisection and landing


class StubScorer:
    """Scores configs by a known function and records every config it was asked for."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[str] = []

    def __call__(self, candidates):
        self.calls.extend(c.key for c in candidates)
        return {c.key: self.fn(c.config) for c in candidates}


def test_greedy_path_follows_the_best_axis_each_step():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.depth * 100 + c.crop / 1000))
    result = run_search(SPACE, 0.05, scorer)
    axes = [s.chosen.axis for s in result.steps]
    assert axes[0] == "depth" and set(axes) <= {"depth", "spatial"}
    # each step's winner is the argmax among its candidates
    for step in result.steps:
        best = max((c for c in step.candidates), key=lambda c: step.outcomes[c.key].top1)
        assert step.chosen.key == best.key
    assert result.steps[-1].base == result.steps[-2].chosen.config if len(result.steps) > 1 else True


def test_exact_path_for_a_known_scorer():
    # accuracy = frames + crop/100: temporal (first in order) wins ties with fast on frames
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.frames + c.crop / 100))
    result = run_search(SPACE, 0.1, scorer)
    path = [(s.chosen.axis, s.chosen.config.frames, s.chosen.config.crop) for s in result.steps]
    assert path[0] == ("fast", 2, 112)  # fast and temporal tie on accuracy and cost: earlier axis
    assert all(axis == "fast" for axis, _, _ in path)
    assert count_flops(result.final) <= 0.1e9 * 1.05


def test_memoisation_never_scores_a_config_twice():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.frames + c.width))
    run_search(SPACE, 0.2, scorer, evaluate_contractions=True)
    assert len(scorer.calls) == len(set(scorer.calls))


def test_contraction_lands_on_target():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.width))
    for target in (0.05, 0.3, 1.0):
        result = run_search(UNBOUNDED, target, scorer)
        assert result.contraction is not None
        assert result.contraction.axis == result.steps[-1].chosen.axis == "width"
        assert abs(result.final_gflops - target) / target < 0.05
        assert count_flops(result.steps[-1].base) < count_flops(result.final) <= count_flops(result.steps[-1].chosen.config)


def test_contract_bisection_is_closest_on_both_sides():
    base = preset("M")
    for axis in UNBOUNDED.axes:
        config, fraction = contract(base, axis, 6e9, UNBOUNDED)
        assert 0 < fraction <= 1
        flops = count_flops(config)
        # no other fraction on a fine grid gets closer to the target
        grid = [count_flops(expand(base, axis, fraction=f / 200, space=UNBOUNDED)) for f in range(1, 201)]
        assert abs(flops - 6e9) <= min(abs(g - 6e9) for g in grid)


def test_coarse_axis_is_topped_up_to_land_within_tolerance():
    # from 112 px the next crops (116, 120) jump the stride-2 feature maps: +16% or more
    base = preset("X2D", frames=8, stride=3, width=2.0, bottleneck=2.25, depth=23.4256, num_classes=12)
    plain, _ = contract(base, "spatial", 6e9, UNBOUNDED)
    assert abs(count_flops(plain) - 6e9) > 0.05 * 6e9
    config, label, fraction = land(base, "spatial", 6e9, UNBOUNDED)
    assert abs(count_flops(config) - 6e9) <= 0.05 * 6e9
    # no crop under the target adds cost (116 and up round to 120), so bottleneck alone lands, and says so
    assert label == "bottleneck" and config.crop == base.crop and 0 < fraction < 1


def test_fine_axis_lands_without_top_up():
    config, label, _ = land(preset("M"), "bottleneck", 6e9, SPACE)
    assert label == "bottleneck" and abs(count_flops(config) - 6e9) <= 0.01 * 6e9


def test_landing_within_the_ratio_takes_a_partial_step_of_the_last_axis_instead_of_a_full_one():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.width + c.depth / 10))
    paper = run_search(SPACE, 0.3, scorer)
    reached = paper.steps[2].chosen.config
    target = 1.2 * count_flops(reached) / 1e9  # less than half a doubling above the third step
    assert run_search(SPACE, target, scorer).steps[3].base == reached  # the paper's protocol steps on past it
    landed = run_search(SPACE, target, scorer, land_within=2 ** 0.5)
    assert [s.chosen.key for s in landed.steps] == [s.chosen.key for s in paper.steps[:3]]
    c = landed.contraction
    assert c.base == reached and c.axis == paper.steps[2].chosen.axis and 0 < c.fraction < 1 and not c.evaluated
    assert c.kind == "land" and run_search(SPACE, target, scorer).contraction.kind == "contract"
    assert abs(landed.final_gflops - target) / target < 0.05
    for bad in (0.5, 3.0, float("nan")):
        untouched = StubScorer(lambda c: Outcome("ok", top1=1.0))
        with pytest.raises(ConfigError, match="--land-within must be between 1"):
            run_search(SPACE, 0.3, untouched, land_within=bad, train_start=True)
        assert not untouched.calls  # refused before the start trains


def test_evaluated_landing_lets_the_proxy_pick_among_all_axes():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.width + (c.crop > 112) * 10 * (c.width > 1)))
    reached = run_search(UNBOUNDED, 0.3, scorer).steps[0].chosen.config
    target = 1.2 * count_flops(reached) / 1e9
    result = run_search(UNBOUNDED, target, scorer, land_within=2 ** 0.5, evaluate_contractions=True)
    c = result.contraction
    assert len(result.steps) == 1 and c.base == reached
    # from one frame no partial fast or temporal step adds a frame: both land as bottleneck does, so the six
    # axes give exactly four distinct landings, and every one of them is evaluated
    landings = {land(reached, axis, target * 1e9, UNBOUNDED)[0].key for axis in UNBOUNDED.axes}
    assert len(landings) == 4 and set(c.evaluated) == landings and all(k in scorer.calls for k in c.evaluated)
    assert c.axis.startswith("spatial") and result.final.crop > 112  # the proxy's pick, not the last axis
    assert abs(result.final_gflops - target) / target < 0.05


def test_evaluated_contractions_pick_best_proxy():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.width + c.depth / 10 - (c.crop > 200)))
    result = run_search(UNBOUNDED, 0.5, scorer, evaluate_contractions=True)
    assert len(result.contraction.evaluated) >= 2
    best = max((k for k, o in result.contraction.evaluated.items()), key=lambda k: result.contraction.evaluated[k].top1)
    assert result.final.key == best


def test_ceiling_skips_without_training():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.depth))
    result = run_search(SPACE, 0.05, scorer, ceiling=0.1)
    asked = set(scorer.calls)
    skipped = [c for s in result.steps for c in s.candidates if s.outcomes[c.key].status == "skipped"]
    assert skipped and all(c.gflops > 0.1 and c.key not in asked for c in skipped)
    assert all(c.gflops <= 0.1 for s in result.steps for c in s.candidates if c.key in asked)


def test_step_entirely_above_ceiling_contracts_from_base():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.depth))
    result = run_search(SPACE, 0.05, scorer, ceiling=0.06)
    assert result.contraction is not None and len(result.contraction.evaluated) >= 2
    assert result.contraction.config.key in scorer.calls
    assert abs(result.final_gflops - 0.05) / 0.05 < 0.05


def test_everything_failing_is_a_clear_error():
    with pytest.raises(SearchError, match="no candidate could be scored"):
        run_search(SPACE, 0.05, StubScorer(lambda c: Outcome("failed", reason="boom")))


def test_ties_break_on_lower_cost_then_axis_order():
    base = preset("X2D")
    cands = step_candidates(base, SPACE, 1)
    same = {c.key: Outcome("ok", top1=0.5) for c in cands}
    chosen = choose(cands, same)
    assert count_flops(chosen.config) == min(count_flops(c.config) for c in cands)


def test_fewer_params_within_a_margin_wins_only_among_near_ties():
    cands = step_candidates(preset("X2D"), SPACE, 1)
    by_axis = {c.axis: c for c in cands}
    scores = {"width": 0.60, "depth": 0.59, "fast": 0.585, "temporal": 0.59, "spatial": 0.50, "bottleneck": 0.61}
    outcomes = {c.key: Outcome("ok", top1=scores[c.axis]) for c in cands}
    assert choose(cands, outcomes).axis == "bottleneck"  # no margin: the highest top-1
    # within 0.03 of 0.61: width, depth, temporal, fast; temporal and fast add no parameters, temporal ranks higher
    assert by_axis["temporal"].params == by_axis["fast"].params < by_axis["depth"].params
    assert choose(cands, outcomes, ties=Ties(0.03)).axis == "temporal"
    assert choose(cands, outcomes, ties=Ties(0.005)).axis == "bottleneck"  # nothing else that close
    # a candidate at a lower rung is never tied with one at the highest
    outcomes[by_axis["temporal"].key] = Outcome("ok", top1=0.60, epochs=1)
    outcomes[by_axis["bottleneck"].key] = Outcome("ok", top1=0.61, epochs=2)
    assert choose(cands, outcomes, ties=Ties(0.03)).axis == "bottleneck"


def test_longer_window_ties_send_a_near_tie_of_fast_and_temporal_to_temporal():
    cands = step_candidates(preset("X2D"), SPACE, 1)
    by_axis = {c.axis: c for c in cands}
    assert window(by_axis["temporal"].config) > window(by_axis["fast"].config)
    scores = {"fast": 0.60, "temporal": 0.59, "spatial": 0.595, "width": 0.61}
    outcomes = {c.key: Outcome("ok", top1=scores.get(c.axis, 0.0)) for c in cands}
    assert choose(cands, outcomes, ties=Ties(0.02)).axis == "fast"  # fewest parameters, then top-1
    assert choose(cands, outcomes, ties=Ties(0.02, longer_window=True)).axis == "spatial"  # fast is out
    outcomes[by_axis["spatial"].key] = Outcome("ok", top1=0.0)
    assert choose(cands, outcomes, ties=Ties(0.02, longer_window=True)).axis == "temporal"
    assert choose(cands, outcomes, ties=Ties(0.005, longer_window=True)).axis == "width"  # not tied
    # rounding can give the two frame steps different frames: from 4x6, fast is 8x3 and temporal 9x4
    base = preset("X2D").replace(frames=4, stride=6)
    by_axis = {c.axis: c for c in step_candidates(base, SPACE, 3)}
    fast, temporal = by_axis["fast"], by_axis["temporal"]
    assert (fast.config.frames, temporal.config.frames) == (8, 9)
    assert longer_window_over(temporal, fast) and not longer_window_over(fast, temporal)
    assert not longer_window_over(temporal, by_axis["spatial"])  # spatial keeps the frames: not a frame step
    outcomes = {fast.key: Outcome("ok", top1=0.2306), temporal.key: Outcome("ok", top1=0.2222)}
    assert choose([fast, temporal], outcomes, ties=Ties(0.02, longer_window=True)) is temporal
    assert choose([fast, temporal], outcomes, ties=Ties(0.02)) is fast


def test_run_search_applies_longer_window_to_every_step():
    def fast_a_hair_ahead(config):  # fast's extra frames at the same window score a little higher
        return Outcome("ok", top1=0.5 + 0.001 * config.frames - 0.0001 * config.stride)

    plain = run_search(SPACE, 0.05, StubScorer(fast_a_hair_ahead), ties=Ties(0.02))
    ruled = run_search(SPACE, 0.05, StubScorer(fast_a_hair_ahead), ties=Ties(0.02, longer_window=True))
    assert "fast" in [s.chosen.axis for s in plain.steps]
    assert "fast" not in [s.chosen.axis for s in ruled.steps] and "temporal" in [s.chosen.axis for s in ruled.steps]


def test_fewer_params_within_includes_the_margin_itself():
    cands = step_candidates(preset("X2D"), SPACE, 1)
    scores = {"width": 0.1 + 0.2, "temporal": 0.3 - 0.02}  # 0.30000000000000004 and 0.27999999999999997
    outcomes = {c.key: Outcome("ok", top1=scores.get(c.axis, 0.0)) for c in cands}
    assert choose(cands, outcomes, ties=Ties(0.02)).axis == "temporal"


def test_run_search_applies_fewer_params_within_to_every_step_and_the_contraction():
    def more_params_score_higher(config):  # every candidate within 0.02 of the best: near-ties everywhere
        return Outcome("ok", top1=0.5 + 0.01 * min(1.0, count_params(config) / 1e6))

    plain = run_search(SPACE, 0.05, StubScorer(more_params_score_higher), evaluate_contractions=True)
    lean = run_search(SPACE, 0.05, StubScorer(more_params_score_higher), evaluate_contractions=True,
                      ties=Ties(0.02))
    assert any(s.chosen.axis in ("width", "bottleneck", "depth") for s in plain.steps)
    for step in lean.steps:
        usable = [c for c in step.candidates if step.outcomes[c.key].usable]
        assert step.chosen.params == min(c.params for c in usable)
    landing = lean.contraction
    assert landing is not None and len(landing.evaluated) >= 2
    assert count_params(landing.config) == min(count_params(X3DConfig.from_dict(json.loads(k)))
                                                      for k in landing.evaluated)


def test_failed_and_diverged_are_never_chosen():
    def fn(c):
        if c.width > 1:
            return Outcome("diverged", reason="nan at step 3")
        return Outcome("ok", top1=c.frames)
    result = run_search(SPACE, 0.03, StubScorer(fn))
    assert all(s.chosen.config.width == 1 for s in result.steps)


def test_target_below_start_is_an_error():
    with pytest.raises(ConfigError, match="not above the start"):
        run_search(SPACE, 0.001, StubScorer(lambda c: Outcome("ok", top1=1)))


def test_training_the_start_first_gives_every_step_one_candidates_a_parent():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.frames + c.width))
    result = run_search(SPACE, 0.05, scorer, train_start=True)
    assert scorer.calls[0] == SPACE.start.key and len(scorer.calls) == len(set(scorer.calls))
    for step in result.steps:
        assert all(c.parent == step.base for c in step.candidates)
    assert result.contraction.base == result.steps[-1].base
    assert result.origin == result.steps[-1].base  # the contraction was not trained: inherit from its base


def test_an_untrainable_start_stops_the_search():
    scorer = StubScorer(lambda c: Outcome("failed", reason="disk on fire"))
    with pytest.raises(SearchError, match="start .* could not be trained: failed disk on fire"):
        run_search(SPACE, 0.05, scorer, train_start=True)


def test_origin_is_the_final_config_when_its_proxy_was_trained():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.depth))
    result = run_search(SPACE, 0.05, scorer, evaluate_contractions=True)
    assert result.origin == result.final


BOX = replace(SPACE, max_window=120.0)  # the default space on the benchmark's 4-s videos
SCORERS = {
    "long windows": lambda c: c.frames * c.stride + c.crop / 1e4,
    "frames": lambda c: c.frames * 10 - c.stride + c.depth,
    "crop, then width": lambda c: c.crop + c.width,
    "by key": lambda c: sum(map(ord, c.key)) % 97,
}


def _inside(config, space):
    return (all(low <= getattr(config, name) <= high for name, (low, high) in space.bounds.items())
            and config.frames * config.stride <= space.max_window)


@pytest.mark.parametrize("name", SCORERS)
@pytest.mark.parametrize("land_within", [1.0, 2 ** 0.5])
def test_expansion_never_leaves_the_box_and_still_lands_on_6_gflops(name, land_within):
    scorer = StubScorer(lambda c: Outcome("ok", top1=float(SCORERS[name](c))))
    result = run_search(BOX, 6.0, scorer, train_start=True, land_within=land_within, ceiling=12)
    offered = [c.config for step in result.steps for c in step.candidates] + [result.final]
    assert all(_inside(config, BOX) for config in offered)
    assert abs(result.final_gflops - 6) / 6 < 0.05


def test_the_path_of_long_windows_stops_temporal_at_16_frames_and_says_so():
    scorer = StubScorer(lambda c: Outcome("ok", top1=float(SCORERS["long windows"](c))))
    result = run_search(BOX, 6.0, scorer, train_start=True, land_within=2 ** 0.5)
    shapes = [(s.chosen.axis, s.chosen.config.frames, s.chosen.config.stride) for s in result.steps[:4]]
    assert shapes == [("temporal", 2, 12), ("temporal", 4, 9), ("temporal", 8, 7), ("temporal", 16, 5)]
    fourth, fifth = result.steps[3], result.steps[4]
    assert 0 < fourth.chosen.fraction < 1 and fourth.chosen.bound == "frames <= 16"
    assert fourth.notes["temporal"].endswith("up to frames <= 16")
    assert fifth.notes["temporal"] == "not offered: at its bound (frames <= 16)"
    assert "temporal" not in {c.axis for c in fifth.candidates}


def test_axes_that_give_one_config_are_named_not_dropped_silently():
    space = replace(SPACE, axes={**SPACE.axes, "twin": dict(SPACE.axes["width"])})
    candidates, notes = offer(preset("X2D"), space, 1)
    assert "twin" not in {c.axis for c in candidates} and notes["twin"] == "same config as width"


def test_a_target_the_box_cannot_reach_is_one_line_before_any_training():
    small = replace(BOX, bounds={**BOX.bounds, "crop": (112, 112), "width": (1.0, 1.0), "depth": (1.0, 1.0),
                                 "bottleneck": (1.0, 1.0)})
    scorer = StubScorer(lambda c: Outcome("ok", top1=1.0))
    with pytest.raises(SearchError, match=r"target 6 GFLOPs is out of reach: .* tops out at 0\.1") as err:
        run_search(small, 6.0, scorer)
    assert "\n" not in str(err.value) and scorer.calls == []


def test_a_start_longer_than_the_window_limit_is_one_line_before_any_training():
    start = BOX.start.replace(frames=4, stride=8)
    short = replace(BOX, start=start, max_window=31.0)
    scorer = StubScorer(lambda c: Outcome("ok", top1=1.0))
    with pytest.raises(SearchError, match=r"start 4x8 .* spans 32 source frames .* limit of 31: raise --max-window"
                       ) as err:
        run_search(short, 6.0, scorer)
    assert "\n" not in str(err.value) and scorer.calls == []
    check_reachable(replace(short, max_window=32.0), 1.0)  # a start at the limit is fine
    check_reachable(replace(BOX, max_window=window(BOX.start) - 1), 1.0)  # so is a one-frame start (X2D)


def _deep_pays_later(space, epochs_after_width=None):
    """Width wins step 1 but nothing after it improves; depth is second at step 1, and its next steps lead.
    ``epochs_after_width``: the rung that width's next step reports (another schedule than depth's)."""
    depth_step = next(c.config for c in step_candidates(space.start, space, 1) if c.axis == "depth")

    def score(config):
        if config.width > 1:
            grown = config.key != expand(space.start, "width", space=space).key
            return Outcome("ok", top1=0.5, epochs=epochs_after_width if grown and epochs_after_width else 2)
        if config.depth > 1:
            return Outcome("ok", top1=0.4 if config.key == depth_step.key else 0.9, epochs=2)
        return Outcome("ok", top1=0.1, epochs=2)
    return score


def test_lookahead_keeps_the_runner_up_whose_next_step_scores_higher():
    greedy = run_search(SPACE, 0.05, StubScorer(_deep_pays_later(SPACE)))
    scorer = StubScorer(_deep_pays_later(SPACE))
    ahead = run_search(SPACE, 0.05, scorer, lookahead=True)
    assert greedy.steps[0].chosen.axis == "width" and greedy.steps[0].lookahead == ""
    first = ahead.steps[0]
    assert first.chosen.axis == "depth" and first.replaced.axis == "width"
    assert first.lookahead == ("looked ahead: depth replaced width, best next candidate 0.9 (depth) against 0.5 "
                               "(width)")
    assert ahead.steps[1].base == first.chosen.config  # the path goes on from the kept branch
    assert {c.key for c in step_candidates(first.replaced.config, SPACE, 2)} <= set(scorer.calls)  # the look's cost
    assert scorer.calls.count(ahead.steps[1].chosen.key) == 1  # the kept branch's next step is not trained again


def test_lookahead_compares_next_steps_only_at_the_same_epochs():
    # width's next step trained 1 epoch, depth's 2 (a step's epochs follow its parent's cost): not comparable
    ahead = run_search(SPACE, 0.05, StubScorer(_deep_pays_later(SPACE, epochs_after_width=1)), lookahead=True)
    assert ahead.steps[0].chosen.axis == "width" and ahead.steps[0].replaced is None
    assert ahead.steps[0].lookahead == "looked ahead: width kept, not compared: the next steps trained 1 and 2 epochs"
    # the other way round too; the config both reach (depth then width) counts as width's alone
    other = run_search(SPACE, 0.05, StubScorer(_deep_pays_later(SPACE, epochs_after_width=4)), lookahead=True)
    assert other.steps[0].chosen.axis == "width" and other.steps[0].replaced is None
    assert other.steps[0].lookahead == "looked ahead: width kept, not compared: the next steps trained 4 and 2 epochs"


def test_lookahead_counts_a_config_both_sides_reach_as_the_winner_s_and_switches_only_past_the_tie_margin():
    width = expand(SPACE.start, "width", space=SPACE)

    def score(config):  # width then depth (= depth then width) scores best; width's other next steps just under
        if config.width > 1:
            return Outcome("ok", top1=0.60 if config.depth > 1 else 0.59 if config.key != width.key else 0.5)
        return Outcome("ok", top1=(0.4 if config.key == expand(SPACE.start, "depth", space=SPACE).key else 0.55)
                       if config.depth > 1 else 0.1)
    ahead = run_search(SPACE, 0.05, StubScorer(score), lookahead=True, ties=Ties(0.02))
    assert ahead.steps[0].chosen.axis == "width" and ahead.steps[0].replaced is None
    assert ahead.steps[0].lookahead == ("looked ahead: width kept over depth, best next candidate 0.6 (width) "
                                        "against 0.55 (depth)")


@pytest.mark.parametrize("fn", [lambda c: Outcome("ok", top1=0.5),  # every score tied
                                lambda c: Outcome("ok", top1=c.depth * 100 + c.crop / 1000)])  # depth leads twice
def test_lookahead_keeps_a_winner_whose_next_step_is_as_good_and_never_looks_past_the_last_full_step(fn):
    plain, ahead = StubScorer(fn), StubScorer(fn)
    greedy = run_search(SPACE, 0.1, plain, land_within=1.5)
    looked = run_search(SPACE, 0.1, ahead, land_within=1.5, lookahead=True)
    assert [s.chosen.key for s in looked.steps] == [s.chosen.key for s in greedy.steps]
    assert looked.final == greedy.final and set(plain.calls) < set(ahead.calls)
    assert all(s.replaced is None for s in looked.steps)
    for step in looked.steps:
        runner_up = max((c for c in step.candidates if c.key != step.chosen.key),
                        key=lambda c: (step.outcomes[c.key].top1, -count_flops(c.config)))
        goes_on = all(count_flops(c.config) * 1.5 <= 0.1e9 for c in (step.chosen, runner_up))
        assert step.lookahead.startswith(f"looked ahead: {step.chosen.axis} kept over") == goes_on, step.index
        assert goes_on or step.lookahead == ""


def test_lookahead_never_switches_to_a_runner_up_for_lack_of_a_comparison():
    width = expand(SPACE.start, "width", space=SPACE)

    def failing_after_width(config):  # width wins step 1, and every next step of width fails
        if config.width > 1:
            return Outcome("ok", top1=0.5) if config.key == width.key else Outcome("failed", reason="boom")
        return Outcome("ok", top1=0.4 if config.depth > 1 else 0.1)
    steps = []
    with pytest.raises(SearchError, match="step 2: no candidate could be scored"):  # as without the look
        run_search(SPACE, 0.05, StubScorer(failing_after_width), lookahead=True, on_step=steps.append)
    assert steps[0].chosen.axis == "width"
    assert steps[0].lookahead == "looked ahead: width kept, width's next step has no usable candidate"


def test_lookahead_takes_no_step_that_max_steps_forbids():
    scorer = StubScorer(lambda c: Outcome("ok", top1=c.frames + c.crop / 100))
    with pytest.raises(ConfigError, match="within 2 steps"):
        run_search(SPACE, 1.0, scorer, lookahead=True, max_steps=2)
    assert max(json.loads(k)["frames"] for k in scorer.calls) == 4  # two steps of frames: nothing of a third
