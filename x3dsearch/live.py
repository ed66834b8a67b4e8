"""The live view of a search: one log-friendly line per event, a summary table at the end."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

from .search import CEILING_FACTOR, Candidate, Outcome, SearchResult, Step, estimate_steps, longer_window_over
from .config import X3DConfig
from .cost import Cost, count_flops
from .scores import headline_text, render_scores, split_scores
from .tables import config_table
from .trial import Init, Status, TrialRecord

__all__ = ["LiveView", "format_duration", "final_text"]


_EXTRAPOLATION = 16  # the ETA extrapolates trial times from at most 1/16 of the target's GFLOPs


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def final_text(final: Mapping[str, Any] | None) -> str:
    """The final training's top-1 (test where it exists) and its per-group table, as lines after a summary."""
    if final is None or final.get("status") != "ok":
        return ""
    table = split_scores(final)
    return f"\nfull training: {headline_text(final)}" + (f"\n{render_scores(table)}" if table else "")


def _trial_tags(record: TrialRecord) -> str:
    """How a finished trial's score came about, e.g. ``  [inherit, 2 ep, seed +1]`` ('' when nothing is known)."""
    tags = [record.init] if record.init in (Init.INHERIT, Init.FALLBACK) else []  # plain scratch goes without saying
    if record.rung:
        tags.append(f"{record.rung} ep")
    if record.seed_offset:
        tags.append(f"seed +{record.seed_offset}")
    return f"  [{', '.join(tags)}]" if tags else ""


def _score_text(outcome: Outcome) -> str:
    """A ranked score as the step line names it: top-1, or the val NLL with its top-1."""
    won = f"top1 {outcome.top1:.1%}"
    return won if outcome.score is None else f"val NLL {-outcome.score:.3f} ({won})"


def _step_text(step: Step, measured: str = "") -> str:
    """The line that announces a step's winner: its score, how it was obtained, and who stopped at a lower rung;
    then, if the space's box shaped the step, a line naming each axis it cut, left out or merged. ``measured``
    follows the GFLOPs (e.g. ``, 18.1 ms``)."""
    outcome = step.outcomes[step.chosen.key]
    how = f" after {outcome.epochs} ep" if outcome.epochs else ""
    if outcome.seeds > 1:
        how += f" (mean of {outcome.seeds} seeds)"
    stopped = [f"{c.axis} ({step.outcomes[c.key].epochs} ep)" for c in step.candidates
               if step.outcomes[c.key].usable and (step.outcomes[c.key].epochs or 0) < (outcome.epochs or 0)]
    lower = f"; stopped at a lower rung: {', '.join(stopped)}" if stopped else ""
    won = _score_text(outcome)
    level = [c for c in step.candidates if step.outcomes[c.key].usable
             and (step.outcomes[c.key].epochs or 0) == (outcome.epochs or 0)]
    above = sorted((c for c in level if step.outcomes[c.key].rank > outcome.rank),
                   key=lambda c: -step.outcomes[c.key].rank) if step.replaced is None else []
    heavier = [c for c in above if c.params > step.chosen.params]  # a near-tie to fewer parameters
    if heavier:
        won += f", fewer parameters than {heavier[0].axis} ({_score_text(step.outcomes[heavier[0].key])})"
    for c in above:  # set aside by the window rule (longer_window_ties) for a longer window among the level
        longer = next((o for o in level if longer_window_over(o, c)), None)
        if longer is not None and c.params <= step.chosen.params:
            won += f", {c.axis} ({_score_text(step.outcomes[c.key])}) set aside for {longer.axis}'s longer window"
    text = (f"  -> step {step.index}: {step.chosen.axis} wins with {won}{how} at "
            f"{step.chosen.gflops:.4f} GFLOPs{measured} ({step.chosen.config.short}){lower}")
    if step.notes:
        text += "\n     box: " + "; ".join(f"{axis} {note}" for axis, note in step.notes.items())
    if step.lookahead:
        text += f"\n     {step.lookahead}"
    return text


class LiveView:
    """Prints progress of a search; silent when ``quiet``."""

    def __init__(self, target_gflops: float | None, start: X3DConfig, concurrency: int, quiet: bool = False,
                 stream: TextIO | None = None, target_text: str | None = None,
                 latency: tuple[Cost, float] | None = None, lookahead: bool = False) -> None:
        """``latency`` (cost, target ms): the steps and ETA aim at the GFLOPs those ms make at the current model's
        ms per GFLOP. ``lookahead``: each step also trains its runner-up's next step, so about twice the work."""
        self._latency = latency
        self._per_step = 2 if lookahead else 1  # rounds of candidates per step still to come
        self.target = target_gflops if latency is None else self._gflops_at_target(start)
        self.target_text = target_text or (f"{target_gflops:g}" if latency is None else f"{latency[1]:g} ms")
        self.quiet = quiet
        self.stream = stream  # None: the current sys.stderr (Tune pickles this view; a bound capture stream would not pickle)
        self.concurrency = max(1, concurrency)
        self.started = time.time()
        self.planned = 0 if self.target is None else estimate_steps(start, self.target)
        self._base = count_flops(start) / 1e9  # GFLOPs of the model the current step expands
        self.best: tuple[str, float, float] | None = None
        self._trials: list[tuple[int, float, float]] = []  # (batch number, GFLOPs, seconds) of ok trials
        self._batch: list[Candidate] = []
        self._pending: list[Candidate] = []
        self._batches = 0
        self._finished = 0
        self._busy = 0.0  # trial seconds reported so far
        self._first_batch: float | None = None  # when the first batch started
        self._measured: tuple[float, float] | None = None  # (wall seconds, trial seconds) up to the last full batch

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream or sys.stderr, flush=True)

    def batch_started(self, candidates: Sequence[Candidate], reused: int) -> None:
        self._batch, self._pending, self._finished = list(candidates), list(candidates), 0
        if not candidates:
            return
        self._batches += 1
        if self._first_batch is None:
            self._first_batch = time.time()
        c = candidates[0]
        planned = f"/~{max(self.planned, c.step)}" if self.planned else ""
        label = ("contraction" if c.kind == "contract" else
                 f"step {c.step}{planned}" + (", the runner-up's look ahead" if c.kind == "lookahead" else ""))
        costs = ", ".join(f"{x.axis} {x.gflops:.3g}" for x in candidates)
        extra = f", {reused} from the journal" if reused else ""
        self._print(f"[{label}] training {len(candidates)} candidates{extra} (GFLOPs: {costs})")

    def trial_finished(self, candidate: Candidate, record: TrialRecord) -> None:
        status = record.status
        if status == Status.RETRIED:
            self._print(f"    {candidate.axis:<11} worker lost, retrying: {record.reason}")
            return
        self._finished += 1
        if candidate in self._pending:
            self._pending.remove(candidate)
        seconds = float(record.seconds or 0.0)
        self._busy += seconds
        if status == Status.OK and seconds > 0:
            self._trials.append((self._batches, candidate.gflops, seconds))
        if not self._pending and self._first_batch is not None:
            self._measured = (time.time() - self._first_batch, self._busy)
        top1 = record.top1
        result = f"top1 {top1:6.1%}" if status == Status.OK and top1 is not None else f"{status}: {record.reason}"[:80]
        if status == Status.OK and top1 is not None and (self.best is None or top1 > self.best[1]):
            self.best = (f"{candidate.axis}@step{candidate.step}", top1, candidate.gflops)
        self._print(f"    {candidate.axis:<11} {candidate.gflops:8.4f} GFLOPs  {result}{_trial_tags(record)}  "
                    f"{seconds:5.1f}s  ({self._finished}/{len(self._batch)})  "
                    f"elapsed {format_duration(time.time() - self.started)}  ETA {self._eta_text()}")

    def step_done(self, step: Step) -> None:
        self._base = step.chosen.gflops
        if self._latency is None:
            self._print(_step_text(step))
            return
        cost = self._latency[0]
        self.target = self._gflops_at_target(step.chosen.config)
        self.planned = step.index + estimate_steps(step.chosen.config, self.target)
        self._print(_step_text(step, f", {cost.of(step.chosen.config) / cost.per_unit:.3g} {cost.unit}"))

    def _gflops_at_target(self, config: X3DConfig) -> float:
        """The GFLOPs a latency target amounts to at ``config``'s measured ms per GFLOP."""
        cost, target = self._latency
        return count_flops(config) / 1e9 * target / (cost.of(config) / cost.per_unit)

    def _eta_text(self) -> str:
        """The ETA as printed: ``~4m30s``, or ``?`` while the run has not measured enough."""
        eta = self._eta()
        return "?" if eta is None else "~" + format_duration(eta)

    def _eta(self) -> float | None:
        """Seconds of proxy training left: the fitted time of every trial still to come, in measured wall time.

        Wall seconds per trial-second come from the completed batches (they fold in concurrency,
        scheduling gaps and a busy machine). Later steps are averaged over which trained candidate
        of this step wins. None for Optuna batches (the view does not know the trial count) and
        until the trial time is fitted.
        """
        if self._measured is None or not self._batch or self._batch[0].kind == "optuna" or self.target is None:
            return None
        fit = self._fit()
        if fit is None:
            return None
        startup, rate = fit
        work = sum(startup + rate * c.gflops for c in self._pending)
        if self._batch[0].kind in ("expand", "lookahead"):  # a look's batch expands the step's winner or runner-up
            parent = self._batch[0].parent
            ratios = [c.gflops / (self._base if parent is None else count_flops(parent) / 1e9) for c in self._batch]
            if statistics.geometric_mean(ratios) <= 1.0:
                return None
            work += statistics.fmean(self._steps_from(c.gflops, ratios, fit) for c in self._batch)
            if self._per_step == 2 and self._batch[0].kind == "expand" and self._batch[0].step >= 2:
                work += sum(startup + rate * c.gflops for c in self._batch)  # the runner-up's round of this step
        wall, busy = self._measured
        return work * wall / busy if busy > 0 else None

    def _fit(self) -> tuple[float, float] | None:
        """(start-up seconds, seconds per GFLOP) of a trial, fitted on the latest three batches' trials.

        None while those trials are start-up bound (the rate must be positive and account for at least half
        of the costliest trial's time) or the costliest is under 1/16 of the target (docs/search.md, "The ETA").
        """
        recent = [(g, s) for batch, g, s in self._trials if batch >= self._batches - 2]
        gflops = [g for g, _ in recent]
        if len(recent) < 3 or min(gflops) == max(gflops) or max(gflops) < self.target / _EXTRAPOLATION:
            return None
        rate, startup = statistics.linear_regression(gflops, [s for _, s in recent])
        return (startup, rate) if rate > 0 and rate * max(gflops) >= startup else None

    def _steps_from(self, base: float, ratios: Sequence[float], fit: tuple[float, float]) -> float:
        """Trial seconds of the steps that expand ``base`` until it reaches the target.

        Each step trains ``ratios`` x its base (skipping those over the default ceiling, as the
        search does) and its base grows by their geometric mean.
        """
        startup, rate = fit
        growth, seconds = statistics.geometric_mean(ratios), 0.0
        while base < self.target:
            seconds += self._per_step * sum(startup + rate * base * r for r in ratios
                                            if base * r <= CEILING_FACTOR * self.target)
            base *= growth
        return seconds

    def message(self, text: str) -> None:
        self._print(text)

    def summary(self, result: SearchResult, final: Mapping[str, Any] | None) -> str:
        """The path as a table and the final model's top-1 per class group, for the caller to print once (the
        command line prints it on stdout)."""
        rows = [("0", "start", result.start, None)]
        for step in result.steps:
            chosen = step.chosen
            axis = chosen.axis if chosen.fraction == 1 else f"{chosen.axis}x{chosen.fraction:.2f}"
            rows.append((str(step.index), axis, chosen.config, step.outcomes[chosen.key].top1))
        if result.contraction is not None:
            c = result.contraction
            ev = c.evaluated.get(c.config.key)
            rows.append(("land" if c.kind == "land" else "c", f"{c.axis}x{c.fraction:.2f}", c.config,
                         ev.top1 if ev and ev.usable else None))
        head = f"{'step':>4}  {'axis':<22}"
        text = config_table(head, ((f"{label:>4}  {axis:<22}", config, count_flops(config) / 1e9,
                                    "-" if top1 is None else f"{top1:.1%}") for label, axis, config, top1 in rows))
        cost = result.cost
        measured = "" if cost.name == "flops" else f", {cost.of(result.final) / cost.per_unit:.4g} {cost.unit}"
        text += f"\nfinal: {result.final.short}, {result.final_gflops:.3f} GFLOPs{measured} (target {self.target_text})"
        return text + f"; wall time {format_duration(time.time() - self.started)}" + final_text(final)
