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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .cost import count_flops
from .errors import DataError, UserError
from .live import LiveView
from .config import X3DConfig
from .rundir import RunDir, atomic_write
from .search import (CEILING_FACTOR, Candidate, Outcome, SearchResult, Step, estimate_steps, run_search,
                     step_candidates)
from .space import SearchSpace, load_space

__all__ = ["ExpandSettings", "Session", "JournalScorer", "run_expand", "plan_text", "path_record"]

_FINAL_STATUSES = ("ok", "diverged", "failed")


@dataclass(frozen=True)
class ExpandSettings:
    """Everything a search run depends on; stored in ``run.yaml``."""

    target_gflops: float
    out: str
    space: str = "x3d_kinetics"
    data: str | None = None
    proxy_schedule: str = "cpu_proxy"
    full_schedule: str = "cpu_full"
    seed: int = 0
    ceiling_gflops: float | None = None
    evaluate_contractions: bool = False
    final_training: bool = True
    address: str | None = None
    storage: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2

    def ceiling(self) -> float:
        """The ceiling in GFLOPs; by default ``CEILING_FACTOR`` times the target."""
        return self.ceiling_gflops if self.ceiling_gflops is not None else CEILING_FACTOR * self.target_gflops


def _check_data(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    missing = [name for name in ("train.csv", "val.csv") if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root} is not in the Kinetics layout: missing {', '.join(missing)} "
                        f"(one 'path label' line per video)")


def _resolve_data(settings: ExpandSettings) -> Path:
    if settings.data is None:
        from .data import default_dataset

        return Path(default_dataset()).resolve()
    root = Path(settings.data).expanduser().resolve()
    _check_data(root)
    return root


def _fit_classes(space: SearchSpace, data_root: Path) -> SearchSpace:
    """The space with its start's classifier sized to the data's class list (every candidate inherits it)."""
    from .data import read_split

    classes = len(read_split(data_root, "train").class_names)
    if classes == space.start.num_classes:
        return space
    return replace(space, start=space.start.replace(num_classes=classes))


def _check_target(settings: ExpandSettings, space: SearchSpace) -> None:
    if count_flops(space.start) >= settings.target_gflops * 1e9:
        raise UserError(f"target {settings.target_gflops:g} GFLOPs is not above the start's cost "
                        f"({count_flops(space.start) / 1e9:.4f} GFLOPs)")


def plan_text(settings: ExpandSettings, space: SearchSpace) -> str:
    """What ``--dry-run`` prints: the space, the first step's candidates and the expected size."""
    _check_target(settings, space)
    start = space.start
    steps = estimate_steps(start, settings.target_gflops)
    lines = [f"search space {space.name}: start {start.short} ({count_flops(start) / 1e9:.4f} GFLOPs), "
             f"axes {', '.join(space.axes)}",
             f"target {settings.target_gflops:g} GFLOPs, ceiling {settings.ceiling():g} GFLOPs: "
             f"about {steps} steps x {len(space.axes)} candidates = ~{steps * len(space.axes)} proxy trainings "
             f"(fewer after memoisation), then contraction and the final training",
             f"proxy schedule {settings.proxy_schedule}, final schedule {settings.full_schedule}, seed {settings.seed}",
             "step 1 candidates:"]
    for c in step_candidates(start, space, 1):
        lines.append(f"  {c.axis:<11} {c.config.short:<28} {c.gflops:8.4f} GFLOPs  {c.params:>10,} params")
    cost, k = count_flops(start), 0
    while cost < settings.target_gflops * 1e9:
        k += 1
        cost *= 2
        lines.append(f"  step {k:>2}: candidates ~{cost / 1e9:.3g} GFLOPs")
    return "\n".join(lines)


def _candidate_record(c: Candidate) -> dict[str, Any]:
    return {"config_key": c.key, "config": c.config.to_dict(), "step": c.step, "axis": c.axis,
            "kind": c.kind, "fraction": c.fraction, "gflops": c.gflops, "params": c.params}


def path_record(result: SearchResult | None, steps: Sequence[Step], target: float) -> dict[str, Any]:
    """The path as JSON-able data (written to ``path.json`` after every step)."""
    data: dict[str, Any] = {"target_gflops": target, "steps": [], "contraction": None, "final": None}
    for s in steps:
        data["steps"].append({
            "step": s.index, "axis": s.chosen.axis, "config": s.chosen.config.to_dict(),
            "config_key": s.chosen.key, "gflops": s.chosen.gflops, "params": s.chosen.params,
            "top1": s.outcomes[s.chosen.key].top1,
            "candidates": [{"axis": c.axis, "config_key": c.key, "gflops": c.gflops,
                            "status": s.outcomes[c.key].status, "top1": s.outcomes[c.key].top1}
                           for c in s.candidates]})
    if result is not None:
        if result.contraction is not None:
            c = result.contraction
            data["contraction"] = {"axis": c.axis, "fraction": c.fraction, "config": c.config.to_dict(),
                                   "config_key": c.config.key, "gflops": c.gflops,
                                   "evaluated": {k: asdict(o) for k, o in c.evaluated.items()}}
        data["final"] = {"config": result.final.to_dict(), "config_key": result.final.key,
                         "gflops": result.final_gflops}
    return data


class JournalScorer:
    """The coordinator's score callback: journal first, Ray for the rest."""

    def __init__(self, run: RunDir, dispatcher: Any, view: LiveView, job_base: Mapping[str, Any]) -> None:
        self.run, self.dispatcher, self.view, self.job_base = run, dispatcher, view, job_base
        self.done: dict[str, dict[str, Any]] = {}
        for record in run.records():
            if record.get("status") in _FINAL_STATUSES:
                self.done[record["config_key"]] = record

    def __call__(self, candidates: Sequence[Candidate]) -> dict[str, Outcome]:
        todo = [c for c in candidates if c.key not in self.done]
        self.view.batch_started(todo, len(candidates) - len(todo))
        if todo:
            by_key = {c.key: c for c in todo}
            jobs = [dict(self.job_base, key=c.key, config=c.config.to_dict()) for c in todo]
            self.dispatcher.run(jobs, lambda job, rec: self._record(by_key[job["key"]], rec))
        return {c.key: _outcome(self.done.get(c.key)) for c in candidates}

    def _record(self, candidate: Candidate, metrics: Mapping[str, Any]) -> None:
        record = _candidate_record(candidate)
        record.update({
            "status": metrics.get("status", "failed"), "top1": metrics.get("top1"),
            "top5": metrics.get("top5"), "seconds": metrics.get("seconds"),
            "node": metrics.get("node"), "attempt": metrics.get("attempt", 1),
            "reason": metrics.get("reason", ""), "started": metrics.get("trial_started"),
            "ended": metrics.get("trial_ended", time.time()),
            "metrics": {k: v for k, v in metrics.items() if k not in ("config",)},
        })
        self.run.append(record)
        if record["status"] in _FINAL_STATUSES:
            self.done[candidate.key] = record
        self.view.trial_finished(candidate, record)


def _outcome(record: Mapping[str, Any] | None) -> Outcome:
    if record is None:
        return Outcome("failed", reason="trial did not report")
    top1 = record.get("top1")
    if record.get("status") == "ok" and (top1 is None or (isinstance(top1, float) and math.isnan(top1))):
        return Outcome("failed", reason="no accuracy reported")
    return Outcome(record["status"], top1=top1 if record["status"] == "ok" else None,
                   reason=record.get("reason") or "")


class Session:
    """What every search strategy shares: run directory, data, schedules, Ray, journal, view.

    Use as a context manager; ``score`` answers a batch of candidates from the journal or
    by proxy training, ``train_final`` trains one config with the full schedule.
    """

    def __init__(self, settings: ExpandSettings, *, resume: bool = False, quiet: bool = False,
                 trial_fn: Any = None, extra: Mapping[str, Any] | None = None) -> None:
        from .dispatch import DispatchOptions, RayDispatcher
        from .schedule import load_schedule

        self.settings = settings
        self.quiet = quiet
        self.data_root = _resolve_data(settings)
        self.space = _fit_classes(load_space(settings.space), self.data_root)
        _check_target(settings, self.space)
        self.proxy = load_schedule(settings.proxy_schedule)
        self.full = load_schedule(settings.full_schedule)
        self.run = RunDir(settings.out)
        resolved = dict(asdict(settings), **(extra or {}), space_resolved=self.space.to_dict(),
                        proxy=self.proxy.to_dict(), full=self.full.to_dict())
        self.run.create(resolved, resume=resume)
        options = DispatchOptions(address=settings.address, cpus_per_trial=settings.cpus_per_trial,
                                  gpus_per_trial=settings.gpus_per_trial,
                                  max_concurrent=settings.max_concurrent, storage=settings.storage,
                                  max_failures=settings.max_failures)
        self.dispatcher = RayDispatcher(options, self.run.path / "ray",
                                        **({"trial_fn": trial_fn} if trial_fn else {}))
        self.view = LiveView(settings.target_gflops, self.space.start, concurrency=_concurrency(options),
                             quiet=quiet)
        job_base = {"data": str(self.data_root), "schedule": self.proxy.to_dict(), "seed": settings.seed}
        self.score = JournalScorer(self.run, self.dispatcher, self.view, job_base)

    def __enter__(self) -> "Session":
        self.dispatcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dispatcher.shutdown()

    def train_final(self, config: X3DConfig) -> dict[str, Any]:
        """Full training of ``config`` into ``RUN_DIR/final`` (resumes from its checkpoint)."""
        from .train import train

        self.view.message(f"final training of {config.short} ({count_flops(config) / 1e9:.3f} GFLOPs) "
                          f"with schedule {self.full.name} -> {self.run.final_dir}")
        self.run.final_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(self.run.final_dir / "config.yaml")
        result = train(config, str(self.data_root), self.full, seed=self.settings.seed,
                       out_dir=self.run.final_dir, resume=True, progress=not self.quiet)
        return result.to_dict()


def run_expand(settings: ExpandSettings, *, resume: bool = False, quiet: bool = False,
               trial_fn: Any = None) -> dict[str, Any]:
    """Search, contract and train the final model; returns the JSON summary of the run."""
    session = Session(settings, resume=resume, quiet=quiet, trial_fn=trial_fn)
    run, view = session.run, session.view
    steps: list[Step] = []

    def _on_step(step: Step) -> None:
        steps.append(step)
        run.write_path(path_record(None, steps, settings.target_gflops))
        view.step_done(step)

    t0 = time.time()
    with session:
        view.message(f"x3dsearch: searching {session.space.name} up to {settings.target_gflops:g} GFLOPs "
                     f"on {session.data_root} -> {run.path}")
        result = run_search(session.space, settings.target_gflops, session.score,
                            ceiling_gflops=settings.ceiling(),
                            evaluate_contractions=settings.evaluate_contractions, on_step=_on_step)
    search_seconds = time.time() - t0
    record = path_record(result, steps, settings.target_gflops)
    run.write_path(record)
    final_metrics = session.train_final(result.final) if settings.final_training else None
    summary_text = view.summary(result, final_metrics)
    summary = {"run_dir": str(run.path), "target_gflops": settings.target_gflops,
               "final": record["final"], "final_metrics": final_metrics, "search_seconds": search_seconds,
               "path": [{"step": s.index, "axis": s.chosen.axis, "gflops": s.chosen.gflops,
                         "top1": s.outcomes[s.chosen.key].top1} for s in steps],
               "contraction": record["contraction"], "trials": sum(1 for _ in run.records()),
               "table": summary_text}
    atomic_write(run.path / "summary.json", json.dumps(summary, indent=2))
    return summary


def _concurrency(options: Any) -> int:
    if options.max_concurrent:
        return int(options.max_concurrent)
    return max(1, int((os.cpu_count() or 1) // max(options.cpus_per_trial, 1e-9)))
