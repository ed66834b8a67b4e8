"""The live view's ETA, as printed after each trial: replayed on a recorded run and on simulated searches.

``data/eta_run.json`` is the journal of a real ``x3dsearch expand --target-gflops 0.5 --no-final-training``
run (2 cores shared with other jobs), trimmed to each trial's step, axis, config, status, top-1, seconds, end
time and whether it won its step.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from x3dsearch import X3DConfig, preset
from x3dsearch import live
from x3dsearch.live import LiveView
from x3dsearch.search import CEILING_FACTOR, Candidate, Outcome, Step, run_search, step_candidates
from x3dsearch.space import load_space
from x3dsearch.trial import TrialRecord

RECORDED_RUN = Path(__file__).parent / "data" / "eta_run.json"


def _record(candidate: Candidate, **fields: Any) -> TrialRecord:
    """The journal record of a trial of ``candidate`` with ``fields`` (those a record has; others are ignored)."""
    return TrialRecord.from_dict({"config_key": candidate.key, "config": candidate.config.to_dict(),
                                  "step": candidate.step, "axis": candidate.axis, "kind": candidate.kind,
                                  "fraction": candidate.fraction, "gflops": candidate.gflops,
                                  "params": candidate.params, "parent_key": None, **fields})


class _Clock:
    """Stands in for the ``time`` module the live view reads, so a replay sets the time."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(live, "time", fake)
    return fake


def _printed_eta(stream: io.StringIO) -> float | None:
    """Seconds of the last ETA printed (``~1h06m``, ``~4m05s``, ``~45s``), None for ``?``."""
    text = re.findall(r"ETA (\S+)", stream.getvalue())[-1]
    if text == "?":
        return None
    hours, minutes, seconds = re.fullmatch(r"~(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text).groups()
    return 3600 * int(hours or 0) + 60 * int(minutes or 0) + int(seconds or 0)


def _assert_honest(etas: Sequence[tuple[int, float | None, float]], factor: float) -> None:
    """Each (step, ETA, real remaining) from step 3 on, but the last: no ETA, or within ``factor``."""
    for step, eta, remaining in etas[2:-1]:
        assert eta is None or remaining / factor <= eta <= remaining * factor, (step, eta, remaining)


def test_eta_waits_while_trials_are_start_up_bound(clock: _Clock) -> None:
    stream = io.StringIO()
    view = LiveView(1.0, preset("X2D"), concurrency=1, stream=stream)
    batch = [Candidate(1, f"axis{i}", preset("X2D", crop=crop)) for i, crop in enumerate((120, 128, 136))]
    view.batch_started(batch, 0)
    for candidate in batch:
        clock.now += 4.0
        view.trial_finished(candidate, _record(candidate, status="ok", top1=0.5, seconds=4.0))
    assert _printed_eta(stream) is None


def test_eta_is_within_2x_of_a_recorded_runs_remaining_time(clock: _Clock) -> None:
    run = json.loads(RECORDED_RUN.read_text())
    start = X3DConfig.from_dict(run["start"])
    stream = io.StringIO()
    view = LiveView(run["target_gflops"], start, run["concurrency"], stream=stream)
    end = max(trial["ended"] for trial in run["trials"])
    base, etas = start, []
    for step in sorted({trial["step"] for trial in run["trials"]}):
        trials = [trial for trial in run["trials"] if trial["step"] == step]
        batch = [Candidate(step, trial["axis"], base.replace(**trial["config"])) for trial in trials]
        view.batch_started(batch, 0)
        for candidate, trial in zip(batch, trials):
            clock.now = trial["ended"]
            view.trial_finished(candidate, _record(candidate, **trial))
        etas.append((step, _printed_eta(stream), end - clock.now))
        outcomes = {c.key: Outcome(t["status"], t["top1"]) for c, t in zip(batch, trials)}
        chosen = next(c for c, t in zip(batch, trials) if t.get("chosen"))
        view.step_done(Step(step, base, tuple(batch), outcomes, chosen))
        base = chosen.config
    _assert_honest(etas, factor=2.0)
    assert all(eta is not None for _, eta, _ in etas[3:]), "an ETA once trials are no longer start-up bound"


def _simulate(clock: _Clock, target: float,
              **options: bool) -> tuple[list[tuple[Candidate, float | None, float]], float]:
    """Search the shipped space with one worker, 3 s + 60 s/GFLOP a trial, the median-cost candidate winning.

    Returns each trial with the ETA printed after it and the time then, and the time the search ended.
    """
    space, stream = replace(load_space(), bounds=None), io.StringIO()  # every axis at every step
    view = LiveView(target, space.start, concurrency=1, stream=stream, lookahead=options.get("lookahead", False))
    trials: list[tuple[Candidate, float | None, float]] = []

    def score(candidates: Sequence[Candidate]) -> dict[str, Outcome]:
        view.batch_started(candidates, 0)
        for candidate in candidates:
            seconds = 3.0 + 60.0 * candidate.gflops
            clock.now += seconds
            view.trial_finished(candidate, _record(candidate, status="ok", top1=0.5, seconds=seconds))
            trials.append((candidate, _printed_eta(stream), clock.now))
        median = sorted(candidates, key=lambda c: c.gflops)[len(candidates) // 2]
        return {c.key: Outcome("ok", top1=0.6 if c is median else 0.5) for c in candidates}

    run_search(space, target, score, ceiling=CEILING_FACTOR * target, on_step=view.step_done, **options)
    return trials, clock.now


@pytest.mark.parametrize("target", [0.5, 2.0, 6.0])
@pytest.mark.parametrize("lookahead", [False, True])
def test_eta_follows_a_simulated_search_whose_trials_take_start_up_plus_rate(clock: _Clock, target: float,
                                                                             lookahead: bool) -> None:
    trials, end = _simulate(clock, target, lookahead=lookahead)
    assert any(c.kind == "lookahead" for c, _, _ in trials) == lookahead
    after_step = list({c.step: (c.step, eta, end - at) for c, eta, at in trials}.values())
    _assert_honest(after_step, factor=1.5)
    # shown from the step after a trial costs 1/16 of the target (tiny trials are overhead-bound)
    shown_from = min(c.step for c, _, _ in trials if c.kind == "expand" and c.gflops >= target / 16)
    assert all(eta is not None for step, eta, _ in after_step if step > shown_from)


def test_eta_of_evaluated_contractions_is_their_remaining_trials(clock: _Clock) -> None:
    trials, end = _simulate(clock, 0.5, evaluate_contractions=True)
    contraction = [(eta, end - at) for c, eta, at in trials if c.kind == "contract"]
    assert len(contraction) >= 2
    assert all(eta == pytest.approx(remaining, abs=1.0) for eta, remaining in contraction)


def test_no_eta_for_optuna_trials(clock: _Clock) -> None:
    stream = io.StringIO()
    view = LiveView(1.0, preset("X2D"), concurrency=1, stream=stream)
    for number, crop in enumerate((112, 160, 224, 320)):
        candidate = Candidate(number, "optuna", preset("X2D", crop=crop), kind="optuna")
        view.batch_started([candidate], 0)
        clock.now += 100.0 * candidate.gflops
        view.trial_finished(candidate, _record(candidate, status="ok", top1=0.5, seconds=100.0 * candidate.gflops))
    assert _printed_eta(stream) is None


def test_trial_lines_and_step_line_say_how_each_score_was_obtained(clock: _Clock) -> None:
    stream, base = io.StringIO(), preset("X2D")
    view = LiveView(1.0, base, concurrency=1, stream=stream)
    batch = [Candidate(1, axis, preset("X2D", crop=crop), parent=base)
             for axis, crop in (("spatial", 128), ("width", 136), ("depth", 144), ("fast", 152))]
    view.batch_started(batch, 0)
    records = [{"init": "inherit", "rung": 1, "seed_offset": 0},
               {"init": "scratch: parent weights missing", "rung": 4, "seed_offset": 1},
               {"init": "scratch", "rung": 2}, {}]
    for candidate, record in zip(batch, records):
        view.trial_finished(candidate, _record(candidate, status="ok", top1=0.5, seconds=2.0, **record))
    lines = stream.getvalue().splitlines()
    assert "top1  50.0%  [inherit, 1 ep]  " in lines[1]
    assert "[scratch: parent weights missing, 4 ep, seed +1]" in lines[2]
    assert "top1  50.0%  [2 ep]  " in lines[3] and "[" not in lines[4]  # plain scratch goes without saying
    outcomes = {batch[0].key: Outcome("ok", 0.5, epochs=1), batch[1].key: Outcome("ok", 0.6, epochs=4, seeds=2),
                batch[2].key: Outcome("ok", 0.55, epochs=2), batch[3].key: Outcome("failed", epochs=1)}
    view.step_done(Step(1, base, tuple(batch), outcomes, batch[1]))
    step_line = stream.getvalue().splitlines()[-1]
    assert "-> step 1: width wins with top1 60.0% after 4 ep (mean of 2 seeds) at " in step_line
    assert step_line.endswith("; stopped at a lower rung: spatial (1 ep), depth (2 ep)")
    ranked = dict(outcomes, **{batch[1].key: Outcome("ok", 0.6, epochs=4, score=-1.234)})  # rank_by: nll
    view.step_done(Step(2, base, tuple(batch), ranked, batch[1]))
    assert "-> step 2: width wins with val NLL 1.234 (top1 60.0%) after 4 ep at " in stream.getvalue().splitlines()[-1]


def test_a_near_tie_won_by_fewer_parameters_or_a_longer_window_says_what_it_passed_over() -> None:
    stream, space = io.StringIO(), load_space("x3d_kinetics")
    view = LiveView(1.0, space.start, concurrency=1, stream=stream)
    cands = step_candidates(space.start, space, 2)
    by_axis = {c.axis: c for c in cands}
    scores = {"temporal": 0.175, "bottleneck": 0.183, "fast": 0.178, "spatial": 0.17, "depth": 0.16, "width": 0.15}
    outcomes = {c.key: Outcome("ok", scores[c.axis], epochs=2) for c in cands}
    view.step_done(Step(2, space.start, tuple(cands), outcomes, by_axis["temporal"]))
    assert ("-> step 2: temporal wins with top1 17.5%, fewer parameters than bottleneck (top1 18.3%), fast "
            "(top1 17.8%) set aside for temporal's longer window after 2 ep" in stream.getvalue().splitlines()[-1])
    spatial_won = dict(outcomes, **{by_axis["bottleneck"].key: Outcome("ok", 0.1, epochs=2),
                                    by_axis["spatial"].key: Outcome("ok", 0.176, epochs=2)})
    view.step_done(Step(3, space.start, tuple(cands), spatial_won, by_axis["spatial"]))
    assert ("spatial wins with top1 17.6%, fast (top1 17.8%) set aside for temporal's longer window after"
            in stream.getvalue().splitlines()[-1])


def test_summary_is_returned_for_the_caller_to_print_once(clock: _Clock) -> None:
    stream, space = io.StringIO(), load_space("x3d_kinetics")
    view = LiveView(0.05, space.start, concurrency=1, stream=stream)
    result = run_search(space, 0.05, lambda cands: {c.key: Outcome("ok", top1=0.5) for c in cands})
    table = view.summary(result, {"status": "ok", "top1": 0.675, "top5": 1.0})
    assert stream.getvalue() == ""
    assert table.count("final: ") == 1 and "full training: top-1 67.5% on val" in table


def test_a_step_the_box_shaped_says_which_axes_it_cut_left_out_or_merged() -> None:
    stream, base = io.StringIO(), preset("M")
    view = LiveView(6.0, base, concurrency=1, stream=stream)
    chosen = Candidate(5, "depth", base.replace(depth=4.84), parent=base)
    notes = {"fast": "not offered: at its bound (frames <= 16)", "width": "x0.50 up to width <= 4"}
    view.step_done(Step(5, base, (chosen,), {chosen.key: Outcome("ok", top1=0.5)}, chosen, notes))
    assert stream.getvalue().splitlines()[-1] == ("     box: fast not offered: at its bound (frames <= 16); "
                                                  "width x0.50 up to width <= 4")


def test_a_step_the_look_ahead_decided_says_so_and_a_parameter_tie_break_only_when_it_chose() -> None:
    base = preset("M")
    depth, spatial = (Candidate(5, "depth", base.replace(depth=4.84), parent=base),
                      Candidate(5, "spatial", base.replace(crop=320), parent=base))
    outcomes = {spatial.key: Outcome("ok", top1=0.5), depth.key: Outcome("ok", top1=0.52)}
    replaced = "looked ahead: spatial replaced depth, best next candidate 0.61 (spatial) against 0.58 (depth)"
    kept = "looked ahead: spatial kept over depth, best next candidate 0.61 (spatial) against 0.58 (depth)"
    for note, winner, claim in ((replaced, depth, False), (kept, None, True)):  # kept: won a near-tie by params
        stream = io.StringIO()
        view = LiveView(6.0, base, concurrency=1, stream=stream)
        view.step_done(Step(5, base, (spatial, depth), outcomes, spatial, {"fast": "not offered: at its bound"},
                            lookahead=note, replaced=winner))
        lines = stream.getvalue().splitlines()
        assert lines[-2:] == ["     box: fast not offered: at its bound", f"     {note}"]
        assert ("fewer parameters than depth" in lines[0]) is claim


def _stub_score(candidates: Sequence[Candidate]) -> dict[str, Outcome]:
    return {c.key: Outcome("ok", top1=0.5) for c in candidates}


def test_summary_ends_with_the_final_models_top1_per_group(clock: _Clock) -> None:
    from x3dsearch.scores import Scores

    groups = {"flicker": ("f1", "f2"), "order": ("o1",)}
    val = Scores.from_counts("val", ((3, 1, 0), (0, 4, 0), (0, 2, 2)), 12, ("f1", "f2", "o1"), groups)
    test = Scores.from_counts("test", ((4, 0, 0), (1, 3, 0), (1, 2, 1)), 12, ("f1", "f2", "o1"), groups)
    final = {"status": "ok", "top1": val.top1, "top5": 1.0, "val": val.to_dict(), "test": test.to_dict()}
    space = load_space("x3d_kinetics")
    view = LiveView(0.02, space.start, 1, stream=io.StringIO())
    result = run_search(space, 0.02, _stub_score, ceiling=CEILING_FACTOR * 0.02)
    lines = view.summary(result, final).splitlines()
    at = lines.index("full training: top-1 66.7% on the held-out test split (12 videos); 75.0% on val, the split "
                     "the search selected on")
    assert [line.split() for line in lines[at + 2:]] == [["all", "75.0%", "12", "66.7%", "12"],
                                                         ["flicker", "87.5%", "8", "87.5%", "8"],
                                                         ["order", "50.0%", "4", "25.0%", "4"]]
    assert live.final_text({"status": "failed"}) == "" and live.final_text(None) == ""
    old = live.final_text({"status": "ok", "top1": 0.5})  # metrics from before per-class results: no table
    assert old == "\nfull training: top-1 50.0% on val, the split the search selected on (its metrics predate test " \
                  "splits): not a held-out number"


class _MsCost:
    """A latency cost where ms per clip is ``ms_per_gflop`` x GFLOPs (the view only reads ``of``)."""

    name, unit, per_unit = "latency", "ms", 1.0

    def __init__(self, ms_per_gflop: float) -> None:
        self.ms_per_gflop = ms_per_gflop

    def of(self, config: X3DConfig) -> float:
        from x3dsearch.cost import count_flops

        return self.ms_per_gflop * count_flops(config) / 1e9


def test_under_a_latency_target_steps_and_eta_aim_at_the_gflops_its_ms_make(clock: _Clock) -> None:
    stream, base = io.StringIO(), preset("X2D")
    cost = _MsCost(100.0)  # so a 20-ms target is 0.2 GFLOPs
    view = LiveView(None, base, concurrency=1, stream=stream, target_text="20 ms per clip", latency=(cost, 20.0))
    assert view.target == pytest.approx(0.2) and view.planned == live.estimate_steps(base, 0.2)
    flops = LiveView(0.2, base, concurrency=1, stream=io.StringIO())
    batches = [[Candidate(1, axis, preset("X2D", crop=crop, frames=frames), parent=base)
                for axis, crop, frames in (("spatial", 160, 1), ("fast", 112, 2), ("temporal", 112, 3))]]
    for view_ in (view, flops):
        for batch in batches:
            view_.batch_started(batch, 0)
            for candidate in batch:
                clock.now += 1000.0 * candidate.gflops
                view_.trial_finished(candidate, _record(candidate, status="ok", top1=0.5,
                                                        seconds=1000.0 * candidate.gflops))
    assert flops._eta() is not None and view._eta() == pytest.approx(flops._eta())  # the same ETA as under the FLOP target the ms make
    chosen = batches[0][0]
    view.step_done(Step(1, base, tuple(batches[0]), {c.key: Outcome("ok", 0.5) for c in batches[0]}, chosen))
    assert f"GFLOPs, {cost.of(chosen.config):.3g} ms (" in stream.getvalue().splitlines()[-1]
    slower = LiveView(None, base, concurrency=1, stream=io.StringIO(), latency=(_MsCost(200.0), 20.0))
    assert slower.target == pytest.approx(0.1)  # twice the ms per GFLOP: half the GFLOPs


class _SlowerWhenLarger(_MsCost):
    """ms per GFLOP grows with the model, as channelwise work does: ``ms_per_gflop`` x GFLOPs^1.5."""

    def of(self, config: X3DConfig) -> float:
        return super().of(config) ** 1.5 / self.ms_per_gflop ** 0.5


def test_under_a_latency_target_the_plan_is_re_read_after_each_step() -> None:
    base, stream = preset("X2D"), io.StringIO()
    cost = _SlowerWhenLarger(100.0)
    view = LiveView(None, base, concurrency=1, stream=stream, latency=(cost, 20.0))
    before = (view.target, view.planned)
    chosen = Candidate(1, "spatial", preset("X2D", crop=224), parent=base)
    view.step_done(Step(1, base, (chosen,), {chosen.key: Outcome("ok", 0.5)}, chosen))
    gflops = chosen.gflops
    assert view.target == pytest.approx(gflops * 20.0 / cost.of(chosen.config)) and view.target < before[0]
    assert view.planned == 1 + live.estimate_steps(chosen.config, view.target) and view.planned < before[1]
