"""Runs a search end to end: journal-backed scoring through Ray, then the final training.

The pure coordinator (:mod:`x3dsearch.search`) asks for scores; this module answers from
the run directory's journal when a config was already trained (resume), and otherwise
dispatches proxy trainings and journals each as it ends.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, replace
from typing import Any, Mapping, Sequence

from .cost import FLOPS, Cost, count_flops
from .live import LiveView
from .config import X3DConfig
from .rundir import RunDir, atomic_write
from .rungs import successive_halving
from .proxy_policy import ProxyPolicy
from .runspec import ExpandSettings, RunSpec, as_spec
from .search import (Candidate, Outcome, SearchResult, Step, check_reachable, estimate_steps, memoised, offer,
                     run_search, score_start, take_step)
from .space import describe_box
from .trial import Init, Status, TrialJob, TrialRecord

__all__ = ["ExpandSettings", "Session", "JournalScorer", "run_expand", "run_step", "plan_text", "path_record"]


def _landing_text(land_within: float) -> str:
    return (f"landing from within {land_within:.3g}x under it" if land_within > 1
            else "contracting the full step that passed it")


def plan_text(spec: RunSpec) -> str:
    """What ``--dry-run`` prints: the space, its box, the first step's candidates and the expected size."""
    budget, space, cost = spec.budget, spec.space, spec.budget.cost(None)
    budget.check(space, cost)
    check_reachable(space, budget.target, cost)
    start = space.start
    steps = estimate_steps(start, budget.target, cost)
    lines = [f"search space {space.name}: start {start.short} ({count_flops(start) / 1e9:.4f} GFLOPs), "
             f"axes {', '.join(space.axes)}",
             f"target {budget.target:g} {cost.unit}, ceiling {budget.ceiling():g} {cost.unit}: "
             f"about {steps} steps x {len(space.axes)} candidates = ~{steps * len(space.axes)} proxy trainings "
             f"(fewer after memoisation), then a partial step onto the target "
             f"({_landing_text(spec.request.land_within)}) and the final training",
             "the box every step stays in (a step that would cross a bound stops at it; the target is within reach):",
             *describe_box(space),
             "step 1 candidates:"]
    candidates, notes = offer(start, space, 1)
    for c in candidates:
        lines.append(f"  {c.axis:<11} {c.config.short:<28} {c.gflops:8.4f} GFLOPs  {c.params:>10,} params")
    lines += [f"  {axis:<11} {note}" for axis, note in notes.items()]
    spent, k = cost.estimate(start), 0
    while spent < budget.target * cost.per_unit:
        k += 1
        spent *= 2
        lines.append(f"  step {k:>2}: candidates ~{spent / cost.per_unit:.3g} {cost.unit}")
    return "\n".join(lines)


def path_record(result: SearchResult | None, steps: Sequence[Step], target: float,
                cost: Cost = FLOPS) -> dict[str, Any]:
    """The path as JSON-able data (written to ``path.json`` after every step); ``target`` in ``cost``'s unit."""
    latency = cost.name == "latency"
    data: dict[str, Any] = {"target_ms" if latency else "target_gflops": target, "steps": [], "contraction": None,
                            "final": None}
    for s in steps:
        data["steps"].append({
            "step": s.index, "axis": s.chosen.axis, "config": s.chosen.config.to_dict(),
            "config_key": s.chosen.key, "gflops": s.chosen.gflops, "params": s.chosen.params,
            "top1": s.outcomes[s.chosen.key].top1, **_score(s.outcomes[s.chosen.key]),
            "fraction": s.chosen.fraction, "notes": dict(s.notes),
            **({"lookahead": s.lookahead} if s.lookahead else {}),  # what a look one step ahead showed
            "candidates": [{"axis": c.axis, "config_key": c.key, "gflops": c.gflops, "fraction": c.fraction,
                            "status": s.outcomes[c.key].status, "top1": s.outcomes[c.key].top1,
                            **_score(s.outcomes[c.key]), "rung": s.outcomes[c.key].epochs,
                            "seeds": s.outcomes[c.key].seeds}
                           for c in s.candidates]})
    if result is not None:
        if result.contraction is not None:
            c = result.contraction
            data["contraction"] = {"kind": c.kind, "axis": c.axis, "fraction": c.fraction, "config": c.config.to_dict(),
                                   "config_key": c.config.key, "gflops": c.gflops,
                                   "evaluated": {k: _outcome_dict(o) for k, o in c.evaluated.items()}}
        data["final"] = {"config": result.final.to_dict(), "config_key": result.final.key,
                         "gflops": result.final_gflops, **({"ms": cost.of(result.final)} if latency else {})}
    return data


def _score(outcome: Outcome) -> dict[str, float]:
    """``{"score": ...}`` when the outcome ranks by another measure than top-1, else nothing (the format before)."""
    return {} if outcome.score is None else {"score": outcome.score}


def _outcome_dict(outcome: Outcome) -> dict[str, Any]:
    return {k: v for k, v in asdict(outcome).items() if k != "score" or v is not None}


class JournalScorer:
    """The coordinator's score callback: journal first, Ray for the rest, over the proxy's rungs.

    A batch of candidates goes through successive halving (:mod:`x3dsearch.rungs`) when the proxy
    policy has rungs, else through one rung of all its epochs. Each (config, rung, seed) trains
    once; the journal remembers it for ``--resume``.
    """

    def __init__(self, run: RunDir, dispatcher: Any, view: LiveView, job_base: TrialJob,
                 proxy: ProxyPolicy, clips: int, start_epochs: int | None = None, close_calls: bool = True) -> None:
        self.run, self.dispatcher, self.view, self.job_base = run, dispatcher, view, job_base  # data, seed, init
        self.proxy, self.clips = proxy, clips
        self.start_epochs = start_epochs  # the start's proxy epochs when not the schedule's (step --from)
        self.close_calls = close_calls  # a batch is a choice (an expansion step), so its close calls count
        self.done: dict[tuple[str, int, int], TrialRecord] = {}
        for record in map(TrialRecord.from_dict, run.records()):
            if record.status.final:
                self.done[(record.config_key, record.rung or proxy.recipe.epochs, record.seed_offset or 0)] = record

    def policy_for(self, candidate: Candidate) -> ProxyPolicy:
        """The proxy policy of the candidate's step (epochs by the step's cost), or of the start (``start_epochs``)."""
        if candidate.kind == "start":
            return self.proxy.for_start(self.start_epochs)
        cost = 2 * count_flops(candidate.parent) / 1e9 if candidate.parent is not None else candidate.gflops
        return self.proxy.for_step(cost, self.clips)

    def __call__(self, candidates: Sequence[Candidate]) -> dict[str, Outcome]:
        groups: dict[ProxyPolicy, list[Candidate]] = {}
        for c in candidates:
            groups.setdefault(self.policy_for(c), []).append(c)
        outcomes: dict[str, Outcome] = {}
        for policy, group in groups.items():
            outcomes.update(successive_halving(
                group, lambda cands, epochs, offset, p=policy: self.score_at(cands, p, epochs, offset),
                policy.ladder(self.close_calls)))
        return outcomes

    def score_at(self, candidates: Sequence[Candidate], policy: ProxyPolicy, epochs: int,
                 offset: int) -> dict[str, Outcome]:
        """Train each candidate up to ``epochs`` of ``policy`` (continuing an earlier rung), seed + ``offset``."""
        todo = [c for c in candidates if (c.key, epochs, offset) not in self.done]
        self.view.batch_started(todo, len(candidates) - len(todo))
        if todo:
            by_key = {c.key: c for c in todo}
            rung = {"stop_epochs": epochs, "seed_offset": offset} if policy.rungs or offset else {}
            jobs = [replace(self.job_base, key=c.key, config=c.config.to_dict(), recipe=policy.recipe.to_dict(), **rung,
                            parent=c.parent.to_dict() if c.parent is not None else None) for c in todo]
            self.dispatcher.run(jobs, lambda job, rec: self._record(by_key[job.key], epochs, offset, rec))
        return {c.key: _outcome(self.done.get((c.key, epochs, offset)), policy.rank_by) for c in candidates}

    def _record(self, candidate: Candidate, epochs: int, offset: int, metrics: Mapping[str, Any]) -> None:
        c = candidate
        record = TrialRecord(
            config_key=c.key, config=c.config.to_dict(), step=c.step, axis=c.axis, kind=c.kind, fraction=c.fraction,
            gflops=c.gflops, params=c.params, parent_key=c.parent.key if c.parent is not None else None,
            status=Status(metrics.get("status", Status.FAILED)), top1=metrics.get("top1"), top5=metrics.get("top5"),
            seconds=metrics.get("seconds"), cpu_seconds=metrics.get("cpu_seconds"), node=metrics.get("node"),
            attempt=metrics.get("attempt", 1), reason=metrics.get("reason", ""), init=metrics.get("init"), rung=epochs,
            seed_offset=offset, started=metrics.get("trial_started"), ended=metrics.get("trial_ended", time.time()),
            metrics={k: v for k, v in metrics.items() if k != "config"})
        self.run.append(record.to_dict())
        if record.status.final:
            self.done[(candidate.key, epochs, offset)] = record
        self.view.trial_finished(candidate, record)


def _outcome(record: TrialRecord | None, rank_by: str = "top1") -> Outcome:
    """A trial's record as the search sees it; under ``rank_by="nll"`` it ranks by minus its val NLL."""
    if record is None:
        return Outcome(Status.FAILED, reason="trial did not report")
    top1 = record.top1
    if record.status is not Status.OK:
        return Outcome(record.status, reason=record.reason or "")
    if top1 is None or (isinstance(top1, float) and math.isnan(top1)):
        return Outcome(Status.FAILED, reason="no accuracy reported")
    if rank_by == "top1":
        return Outcome(record.status, top1=top1)
    nll = (record.metrics.get("val") or {}).get("nll")
    if nll is None:
        return Outcome(Status.FAILED, reason="no validation NLL reported (a trial recorded before rank_by: nll)")
    return Outcome(record.status, top1=top1, score=-float(nll))


class Session:
    """What every search strategy shares, from its resolved RunSpec: run directory, data, schedules, Ray, journal, view.

    Use as a context manager; ``score`` answers a batch of candidates from the journal or
    by proxy training, ``train_final`` trains one config with the full schedule. ``start``
    replaces the space's start (``step --from``); it then trains as long as a search from the
    space's own start would have trained it by then (:meth:`ProxyPolicy.path_epochs`).
    ``close_calls=False`` (a sampling strategy) never re-trains a batch's close calls. ``expansion``
    refuses, before the run directory is made, a target that expansion inside the space's box cannot reach;
    without it (a sampler) candidates rank by top-1 whatever the policy's ``rank_by``.
    """

    def __init__(self, spec: RunSpec, *, resume: bool = False, quiet: bool = False,
                 trial_fn: Any = None, extra: Mapping[str, Any] | None = None,
                 start: X3DConfig | None = None, close_calls: bool = True, expansion: bool = True) -> None:
        from .dispatch import RayDispatcher

        self.spec = spec if start is None else spec.starting_at(start)
        self.quiet = quiet
        self.data_root = spec.data.root
        self.proxy, self.full = spec.proxy, spec.full  # run.yaml keeps the full entry; its recipe trains
        self.window_line = spec.data.window_text
        self.space = self.spec.space
        budget = spec.budget
        checks = budget.cost(None)  # nothing is written into the run directory before it is made
        budget.check(self.space, checks)
        if expansion:
            check_reachable(self.space, budget.target, checks)
        self.run = RunDir(spec.request.out)
        self.run.create(self.spec.to_dict(extra, checks.name), resume=resume)
        self.cost = budget.cost(self.run.path)
        options = spec.dispatch
        self.dispatcher = RayDispatcher(options, self.run.path / "ray",
                                        **({"trial_fn": trial_fn} if trial_fn else {}))
        self.view = LiveView(budget.target_gflops, self.space.start, concurrency=_concurrency(options),
                             quiet=quiet, target_text=budget.text(),
                             latency=None if budget.target_ms is None else (self.cost, budget.target_ms),
                             lookahead=self.proxy.lookahead and expansion and start is None)
        self.weights_dir = self.run.path.resolve() / "weights"  # absolute: Ray workers run in their own folders
        self.weights_dir.mkdir(exist_ok=True)
        job_base = TrialJob(key="", config={}, recipe={}, data=str(self.data_root), seed=spec.request.seed,
                            init=spec.proxy_init, weights_dir=str(self.weights_dir),
                            trials_dir=str(self.weights_dir.parent / "trials"))
        clips = spec.data.train_clips(self.proxy.recipe)
        start_epochs = None if start is None else self.proxy.path_epochs(
            count_flops(spec.space.start) / 1e9, count_flops(self.space.start) / 1e9, clips)
        ranked = self.proxy if expansion else self.proxy.replace(rank_by="top1")  # samplers maximise top-1
        self.score = JournalScorer(self.run, self.dispatcher, self.view, job_base, ranked, clips, start_epochs,
                                   close_calls)

    def __enter__(self) -> "Session":
        return self  # Ray starts with the first trial to dispatch: a replayed search never starts it

    def __exit__(self, *exc: Any) -> None:
        self.dispatcher.shutdown()

    def train_final(self, config: X3DConfig, origin: X3DConfig | None = None) -> dict[str, Any]:
        """Full training of ``config`` into ``RUN_DIR/final`` (resumes from its checkpoint).

        With ``--final-init inherit`` (and ``--proxy-init inherit``) it starts from the proxy-trained weights of
        ``origin`` (the config itself or the base of its partial step), expanded function-preservingly.
        With ``full_workers`` > 1 it runs on that many Ray Train workers (:mod:`x3dsearch.distributed`).
        It scores val and, where the data has one, the test split (the search selected on val only).
        """
        from .fit import fit
        from .proxy import initial_state

        spec = self.spec
        inherit = spec.final_inherits and origin is not None
        state, init = initial_state(config, origin if inherit else None, self.weights_dir, spec.request.seed)
        source = f"from the proxy weights of {origin.short}" if state is not None and origin else init
        workers = spec.workers
        on = f" on {workers.workers} Ray Train workers" if workers.workers > 1 else ""
        self.view.message(f"final training of {config.short} ({count_flops(config) / 1e9:.3f} GFLOPs) "
                          f"with schedule {self.full.recipe.name}, {source}{on} -> {self.run.final_dir}")
        self.run.final_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(self.run.final_dir / "config.yaml")
        result = fit(config, str(self.data_root), self.full.recipe, spec.request.seed, out_dir=self.run.final_dir,
                     workers=workers, init_state=state, progress=not self.quiet, test_split=True)
        return dict(result.to_dict(), init=init, origin_key=origin.key if state is not None and origin else None)


def run_expand(spec: RunSpec | ExpandSettings, *, resume: bool = False, quiet: bool = False,
               trial_fn: Any = None) -> dict[str, Any]:
    """Search, contract and train the final model (settings are resolved first); returns the run's JSON summary."""
    spec = as_spec(spec)
    settings, budget = spec.request, spec.budget
    session = Session(spec, resume=resume, quiet=quiet, trial_fn=trial_fn)
    run, view = session.run, session.view
    steps: list[Step] = []

    def _on_step(step: Step) -> None:
        steps.append(step)
        run.write_path(path_record(None, steps, budget.target, session.cost))
        view.step_done(step)

    t0 = time.time()
    with session:
        view.message(f"x3dsearch: searching {session.space.name} up to {budget.text()} "
                     f"on {session.data_root} -> {run.path}; {session.window_line}")
        result = run_search(session.space, budget.target, session.score, cost=session.cost, ceiling=budget.ceiling(),
                            evaluate_contractions=settings.evaluate_contractions, land_within=settings.land_within,
                            train_start=spec.proxy_init == Init.INHERIT,
                            ties=session.proxy.ties, lookahead=session.proxy.lookahead,
                            on_step=_on_step)
    search_seconds = time.time() - t0
    record = path_record(result, steps, budget.target, session.cost)
    run.write_path(record)
    final_metrics = session.train_final(result.final, result.origin) if settings.final_training else None
    summary_text = view.summary(result, final_metrics)
    summary = {"run_dir": str(run.path), "target_gflops": settings.target_gflops, "target_ms": settings.target_ms,
               "final": record["final"], "final_metrics": final_metrics, "search_seconds": search_seconds,
               "path": [{"step": s.index, "axis": s.chosen.axis, "gflops": s.chosen.gflops,
                         "top1": s.outcomes[s.chosen.key].top1} for s in steps],
               "contraction": record["contraction"], "trials": sum(1 for _ in run.records()),
               "table": summary_text}
    atomic_write(run.path / "summary.json", json.dumps(summary, indent=2))
    return summary


def run_step(spec: RunSpec | ExpandSettings, base: X3DConfig, *, resume: bool = False, quiet: bool = False,
             trial_fn: Any = None) -> dict[str, Any]:
    """One expansion step from ``base``, taken as ``expand`` takes a step: the candidates' scores and the choice.

    With ``proxy_init="inherit"`` the base is first trained from scratch for as many proxy epochs as
    a search from the space's start would have trained it by then (:meth:`ProxyPolicy.path_epochs`),
    and every candidate inherits its weights. Nothing is skipped for cost.
    Returns ``{"base", "candidates": [{"axis", "gflops", "top1", ...}], "chosen", ...}``.
    """
    spec = as_spec(spec)
    settings, inherit = spec.request, spec.proxy_init == Init.INHERIT
    session = Session(spec, resume=resume, quiet=quiet, trial_fn=trial_fn, start=base)
    start = session.space.start
    t0 = time.time()
    with session:
        score = memoised(session.score)
        if inherit:
            score_start(start, score)
        step = take_step(start, 1, session.space, score, ties=session.proxy.ties)
    assert step is not None  # no ceiling: every candidate is scored
    seconds: dict[str, float] = {}  # every trial of a config counts: rungs and repeats record their own time
    for r in session.run.records():
        seconds[r["config_key"]] = seconds.get(r["config_key"], 0.0) + (r.get("seconds") or 0.0)
    summary = {"base": start.to_dict(), "init": settings.proxy_init, "schedule": session.proxy.recipe.name,
               "seed": settings.seed, "run_dir": str(session.run.path), "wall_seconds": time.time() - t0,
               "base_seconds": seconds.get(start.key, 0.0) if inherit else 0.0,
               "base_epochs": session.score.start_epochs if inherit else 0,
               "candidates": [{"axis": c.axis, "gflops": c.gflops, "top1": step.outcomes[c.key].top1,
                               **_score(step.outcomes[c.key]), "status": step.outcomes[c.key].status,
                               "seconds": seconds.get(c.key)}
                              for c in step.candidates],
               "chosen": step.chosen.axis}
    atomic_write(session.run.path / "step.json", json.dumps(summary, indent=2))
    return summary


def _concurrency(options: Any) -> int:
    if options.max_concurrent:
        return int(options.max_concurrent)
    return max(1, int((os.cpu_count() or 1) // max(options.cpus_per_trial, 1e-9)))
