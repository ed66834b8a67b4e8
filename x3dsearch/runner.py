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

from .cost import FLOPS, Cost, count_flops
from .errors import DataError, UserError
from .live import LiveView
from .config import X3DConfig
from .rundir import RunDir, atomic_write
from .rungs import successive_halving
from .proxy_policy import ProxyPolicy
from .recipe import Recipe
from .schedule import load_schedule
from .search import (CEILING_FACTOR, LAND_WITHIN, Candidate, Outcome, SearchResult, Step, check_reachable,
                     estimate_steps, memoised, offer, run_search, score_start, take_step)
from .space import SearchSpace, describe_box, load_space
from .trial import Init, Status, TrialJob, TrialRecord

__all__ = ["ExpandSettings", "ceiling_of", "Session", "JournalScorer", "run_expand", "run_step", "plan_text",
           "check_inputs", "path_record"]

@dataclass(frozen=True)
class ExpandSettings:
    """Everything a search run depends on; stored in ``run.yaml``."""

    target_gflops: float | None  # None when the budget is latency (target_ms)
    out: str
    space: str = "x3d_kinetics"
    data: str | None = None
    proxy_schedule: str = "cpu_proxy"
    full_schedule: str = "cpu_full"
    proxy_init: str = Init.INHERIT.value
    seed: int = 0
    ceiling_gflops: float | None = None
    evaluate_contractions: bool = False
    land_within: float = LAND_WITHIN
    final_training: bool = True
    address: str | None = None
    storage: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    full_workers: int = 1
    max_window: float | None = None  # seconds a clip may span; None: the shortest video the data lists
    target_ms: float | None = None  # a latency budget instead: ms per clip, measured as latency_* say
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_threads: int = 1
    latency_node: str | None = None  # a Ray custom resource: time on the node offering it (the deployment device)

    def __post_init__(self) -> None:
        if self.target_ms is not None and (self.target_gflops is not None or self.ceiling_gflops is not None):
            raise UserError("a latency target (target_ms) comes alone: no target_gflops, and no ceiling_gflops "
                            "(its ceiling is 2x the target in ms)")

    @property
    def target(self) -> float:
        """The budget in its cost's unit: ms per clip when latency-costed, else GFLOPs."""
        target = self.target_gflops if self.target_ms is None else self.target_ms
        if target is None:
            raise UserError("a run needs a target: --target-gflops or --target-ms")
        return target

    def ceiling(self) -> float:
        """The ceiling in the target's unit (:func:`ceiling_of`)."""
        return ceiling_of(self.target, self.ceiling_gflops)

    def cost(self, run_dir: str | Path | None) -> Cost:
        """C(X) of the run: exact FLOPs, or with ``target_ms`` latency timed into ``run_dir``'s table and the cache's."""
        if self.target_ms is None:
            return FLOPS
        from .latency import RayNode, latency_cost

        node = RayNode(self.latency_node, self.address) if self.latency_node else None
        return latency_cost(run_dir, self.latency_device, self.latency_batch, self.latency_threads, node)

    def budget_text(self) -> str:
        """The target as words, e.g. ``6 GFLOPs`` or ``40 ms per clip (cpu, batch 1, 1 thread)``."""
        if self.target_ms is None:
            return f"{self.target:g} GFLOPs"
        from .latency import thread_count

        node = f" on the Ray node offering {self.latency_node!r}" if self.latency_node else ""
        return (f"{self.target_ms:g} ms per clip ({self.latency_device}{node}, batch {self.latency_batch}, "
                f"{thread_count(self.latency_threads)})")


def ceiling_of(target: float, ceiling: float | None) -> float:
    """A search's ceiling in its target's unit: the one given, by default ``CEILING_FACTOR`` times the target."""
    return ceiling if ceiling is not None else CEILING_FACTOR * target


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

    return _with_classes(space, len(read_split(data_root, "train").class_names))


def _with_classes(space: SearchSpace, classes: int) -> SearchSpace:
    """The space with its start's classifier sized to ``classes`` (every candidate inherits it)."""
    if classes == space.start.num_classes:
        return space
    return replace(space, start=space.start.replace(num_classes=classes))


def _window_limit(settings: ExpandSettings, root: Path | None,
                  recipes: Sequence[Recipe]) -> tuple[float | None, str]:
    """The longest clip window in seconds and a line saying where it comes from: ``max_window``, else the
    shortest video (``root`` None: the default benchmark's length), at most what the clip cache keeps."""
    from .data import shortest_video
    from .data.kinetics import CACHED_SECONDS, REFERENCE_FPS
    from .data.synthetic import SECONDS

    if settings.max_window is not None:
        seconds, source = settings.max_window, "--max-window"
    else:
        probed = (SECONDS, "the benchmark's video length") if root is None else shortest_video(root)
        if probed is None:
            return None, "window limit: none (no video of the data could be probed)"
        seconds, source = probed[0], probed[1] if root is None else f"the shortest video, {probed[1]}"
        if any(r.cache for r in recipes) and CACHED_SECONDS < seconds:
            seconds, source = CACHED_SECONDS, "what the clip cache keeps of a video"
    return seconds, (f"window limit: {seconds:g} s = {seconds * REFERENCE_FPS:g} source frames at "
                     f"{REFERENCE_FPS:g} fps ({source})")


def _fit_window(space: SearchSpace, seconds: float | None) -> SearchSpace:
    """The space whose windows (frames x stride, source frames at the reference rate) fit ``seconds``."""
    from .data.kinetics import REFERENCE_FPS

    return replace(space, max_window=None if seconds is None else seconds * REFERENCE_FPS)


def _describe_data(root: Path) -> tuple[int, str]:
    """Read a data folder's split CSVs as a run will: its class count and a one-line summary.

    Raises DataError for a missing folder or CSV, a bad line, or a split none of whose videos exist.
    """
    from .data import read_split

    _check_data(root)
    names = ("train", "val", "test") if (root / "test.csv").is_file() else ("train", "val")
    splits = {name: read_split(root, name) for name in names}
    missing = 0
    for split in splits.values():
        absent = [video for video in split.videos if not video.is_file()]
        if len(absent) == len(split.videos):
            raise DataError(f"{split.csv}: none of its {len(absent)} videos exist (e.g. {absent[0]})")
        missing += len(absent)
    classes = len(splits["train"].class_names)
    counts = " / ".join(f"{len(split.videos)} {name}" for name, split in splits.items())
    note = f"; {missing} listed video{'s' if missing > 1 else ''} missing (a run skips them)" if missing else ""
    held = "" if "test" in splits else "; no test.csv: the final top-1 will be on val, the split the search selects on"
    return classes, f"data: {root}, {classes} classes, {counts} videos{note}{held}"


def _describe_schedule(arg: str, schedule: ProxyPolicy) -> str:
    """A schedule as the dry run shows it: where it came from, its length and optimiser."""
    recipe = schedule.recipe
    videos = "all" if recipe.train_videos is None else recipe.train_videos
    low, high = schedule.epoch_range()
    epochs = f"{low}-{high} epochs by step cost" if high > low else f"{recipe.epochs} epochs"
    return f"{arg} ({epochs} over {videos} train videos, {recipe.optimizer})"


def check_inputs(settings: ExpandSettings, *, resume: bool = False) -> tuple[SearchSpace, list[str]]:
    """Read every input a run reads (data, space, schedules, run directory) without training or writing.

    Returns the search space fitted to the data's classes and lines saying what was found;
    raises the run's one-line UserError for the first unusable input.
    """
    space = load_space(settings.space)
    if settings.data is None:
        from .data.synthetic import CLASSES

        classes, data_line = len(CLASSES), (f"data: the synthetic benchmark, {len(CLASSES)} classes "
                                            f"(default; rendered on first use, then cached)")
    else:
        classes, data_line = _describe_data(Path(settings.data).expanduser().resolve())
    proxy, full = load_schedule(settings.proxy_schedule), load_schedule(settings.full_schedule)
    data_root = None if settings.data is None else Path(settings.data).expanduser().resolve()
    seconds, window_line = _window_limit(settings, data_root, (proxy.recipe, full.recipe))
    space = _fit_window(_with_classes(space, classes), seconds)
    _check_target(settings, space, settings.cost(None))
    run = RunDir(settings.out)
    if run.exists() and not resume:
        raise UserError(f"{run.path} already holds a run; pass --resume to continue it or choose another -o/--output")
    state = f"resuming its {sum(1 for _ in run.records())} journal records" if run.exists() else "new"
    return space, [data_line, window_line,
                   f"schedules: proxy {_describe_schedule(settings.proxy_schedule, proxy)}, "
                   f"final {_describe_schedule(settings.full_schedule, full)}"
                   f"{'' if settings.final_training else ' (not run: --no-final-training)'}; seed {settings.seed}",
                   f"run directory: {run.path} ({state})"]


def _check_target(settings: ExpandSettings, space: SearchSpace, cost: Cost) -> None:
    if cost.estimate(space.start) >= settings.target * cost.per_unit:
        raise UserError(f"target {settings.target:g} {cost.unit} is not above the start's cost "
                        f"({cost.estimate(space.start) / cost.per_unit:.4f} {cost.unit})")


def _landing_text(land_within: float) -> str:
    return (f"landing from within {land_within:.3g}x under it" if land_within > 1
            else "contracting the full step that passed it")


def plan_text(settings: ExpandSettings, space: SearchSpace) -> str:
    """What ``--dry-run`` prints: the space, its box, the first step's candidates and the expected size."""
    cost = settings.cost(None)
    _check_target(settings, space, cost)
    check_reachable(space, settings.target, cost)
    start = space.start
    steps = estimate_steps(start, settings.target, cost)
    lines = [f"search space {space.name}: start {start.short} ({count_flops(start) / 1e9:.4f} GFLOPs), "
             f"axes {', '.join(space.axes)}",
             f"target {settings.target:g} {cost.unit}, ceiling {settings.ceiling():g} {cost.unit}: "
             f"about {steps} steps x {len(space.axes)} candidates = ~{steps * len(space.axes)} proxy trainings "
             f"(fewer after memoisation), then a partial step onto the target "
             f"({_landing_text(settings.land_within)}) and the final training",
             "the box every step stays in (a step that would cross a bound stops at it; the target is within reach):",
             *describe_box(space),
             "step 1 candidates:"]
    candidates, notes = offer(start, space, 1)
    for c in candidates:
        lines.append(f"  {c.axis:<11} {c.config.short:<28} {c.gflops:8.4f} GFLOPs  {c.params:>10,} params")
    lines += [f"  {axis:<11} {note}" for axis, note in notes.items()]
    spent, k = cost.estimate(start), 0
    while spent < settings.target * cost.per_unit:
        k += 1
        spent *= 2
        lines.append(f"  step {k:>2}: candidates ~{spent / cost.per_unit:.3g} {cost.unit}")
    return "\n".join(lines)


def _train_clips(data_root: Path, recipe: Recipe) -> int:
    """Training clips per epoch of the proxy: the train split, or the recipe's subset of it."""
    from .data import read_split

    videos = len(read_split(data_root, "train").videos)
    return min(videos, recipe.train_videos) if recipe.train_videos else videos


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
            "top1": s.outcomes[s.chosen.key].top1, "fraction": s.chosen.fraction, "notes": dict(s.notes),
            "candidates": [{"axis": c.axis, "config_key": c.key, "gflops": c.gflops, "fraction": c.fraction,
                            "status": s.outcomes[c.key].status, "top1": s.outcomes[c.key].top1,
                            "rung": s.outcomes[c.key].epochs, "seeds": s.outcomes[c.key].seeds}
                           for c in s.candidates]})
    if result is not None:
        if result.contraction is not None:
            c = result.contraction
            data["contraction"] = {"kind": c.kind, "axis": c.axis, "fraction": c.fraction, "config": c.config.to_dict(),
                                   "config_key": c.config.key, "gflops": c.gflops,
                                   "evaluated": {k: asdict(o) for k, o in c.evaluated.items()}}
        data["final"] = {"config": result.final.to_dict(), "config_key": result.final.key,
                         "gflops": result.final_gflops, **({"ms": cost.of(result.final)} if latency else {})}
    return data


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
        return {c.key: _outcome(self.done.get((c.key, epochs, offset))) for c in candidates}

    def _record(self, candidate: Candidate, epochs: int, offset: int, metrics: Mapping[str, Any]) -> None:
        c = candidate
        record = TrialRecord(
            config_key=c.key, config=c.config.to_dict(), step=c.step, axis=c.axis, kind=c.kind, fraction=c.fraction,
            gflops=c.gflops, params=c.params, parent_key=c.parent.key if c.parent is not None else None,
            status=Status(metrics.get("status", Status.FAILED)), top1=metrics.get("top1"), top5=metrics.get("top5"),
            seconds=metrics.get("seconds"), node=metrics.get("node"), attempt=metrics.get("attempt", 1),
            reason=metrics.get("reason", ""), init=metrics.get("init"), rung=epochs, seed_offset=offset,
            started=metrics.get("trial_started"), ended=metrics.get("trial_ended", time.time()),
            metrics={k: v for k, v in metrics.items() if k != "config"})
        self.run.append(record.to_dict())
        if record.status.final:
            self.done[(candidate.key, epochs, offset)] = record
        self.view.trial_finished(candidate, record)


def _outcome(record: TrialRecord | None) -> Outcome:
    if record is None:
        return Outcome(Status.FAILED, reason="trial did not report")
    top1 = record.top1
    if record.status is Status.OK and (top1 is None or (isinstance(top1, float) and math.isnan(top1))):
        return Outcome(Status.FAILED, reason="no accuracy reported")
    return Outcome(record.status, top1=top1 if record.status is Status.OK else None, reason=record.reason or "")


class Session:
    """What every search strategy shares: run directory, data, schedules, Ray, journal, view.

    Use as a context manager; ``score`` answers a batch of candidates from the journal or
    by proxy training, ``train_final`` trains one config with the full schedule. ``start``
    replaces the space's start (``step --from``); it then trains as long as a search from the
    space's own start would have trained it by then (:meth:`ProxyPolicy.path_epochs`).
    ``close_calls=False`` (a sampling strategy) never re-trains a batch's close calls. ``expansion``
    refuses, before the run directory is made, a target that expansion inside the space's box cannot reach.
    """

    def __init__(self, settings: ExpandSettings, *, resume: bool = False, quiet: bool = False,
                 trial_fn: Any = None, extra: Mapping[str, Any] | None = None,
                 start: X3DConfig | None = None, close_calls: bool = True, expansion: bool = True) -> None:
        from .dispatch import DispatchOptions, RayDispatcher

        self.settings = settings
        self.quiet = quiet
        self.data_root = _resolve_data(settings)
        self.proxy = load_schedule(settings.proxy_schedule)
        self.full = load_schedule(settings.full_schedule)  # run.yaml keeps the entry; its recipe trains
        seconds, self.window_line = _window_limit(settings, self.data_root, (self.proxy.recipe, self.full.recipe))
        space = _fit_window(_fit_classes(load_space(settings.space), self.data_root), seconds)
        self.space = space if start is None else _with_classes(replace(space, start=start), space.start.num_classes)
        checks = settings.cost(None)  # nothing is written into the run directory before it is made
        _check_target(settings, self.space, checks)
        if expansion:
            check_reachable(self.space, settings.target, checks)
        self.run = RunDir(settings.out)
        resolved = dict(asdict(settings), **(extra or {}), cost=checks.name, space_resolved=self.space.to_dict(),
                        proxy=self.proxy.to_dict(), full=self.full.to_dict())
        self.run.create(resolved, resume=resume)
        self.cost = settings.cost(self.run.path)
        options = DispatchOptions(address=settings.address, cpus_per_trial=settings.cpus_per_trial,
                                  gpus_per_trial=settings.gpus_per_trial,
                                  max_concurrent=settings.max_concurrent, storage=settings.storage,
                                  max_failures=settings.max_failures)
        self.dispatcher = RayDispatcher(options, self.run.path / "ray",
                                        **({"trial_fn": trial_fn} if trial_fn else {}))
        self.view = LiveView(settings.target_gflops, self.space.start, concurrency=_concurrency(options),
                             quiet=quiet, target_text=settings.budget_text(),
                             latency=None if settings.target_ms is None else (self.cost, settings.target_ms))
        self.weights_dir = self.run.path.resolve() / "weights"  # absolute: Ray workers run in their own folders
        self.weights_dir.mkdir(exist_ok=True)
        job_base = TrialJob(key="", config={}, recipe={}, data=str(self.data_root), seed=settings.seed,
                            init=Init(settings.proxy_init), weights_dir=str(self.weights_dir),
                            trials_dir=str(self.weights_dir.parent / "trials"))
        clips = _train_clips(self.data_root, self.proxy.recipe)
        start_epochs = None if start is None else self.proxy.path_epochs(
            count_flops(space.start) / 1e9, count_flops(self.space.start) / 1e9, clips)
        self.score = JournalScorer(self.run, self.dispatcher, self.view, job_base, self.proxy, clips, start_epochs,
                                   close_calls)

    def __enter__(self) -> "Session":
        self.dispatcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dispatcher.shutdown()

    def train_final(self, config: X3DConfig, origin: X3DConfig | None = None) -> dict[str, Any]:
        """Full training of ``config`` into ``RUN_DIR/final`` (resumes from its checkpoint).

        With ``--proxy-init inherit`` it starts from the proxy-trained weights of ``origin``
        (the config itself or the base of its partial step), expanded function-preservingly.
        With ``full_workers`` > 1 it runs on that many Ray Train workers (:mod:`x3dsearch.distributed`).
        It scores val and, where the data has one, the test split (the search selected on val only).
        """
        from .fit import fit
        from .workers import WorkerOptions
        from .proxy import initial_state

        inherit = self.settings.proxy_init == Init.INHERIT and origin is not None
        state, init = initial_state(config, origin if inherit else None, self.weights_dir, self.settings.seed)
        source = f"from the proxy weights of {origin.short}" if state is not None and origin else init
        s = self.settings
        on = f" on {s.full_workers} Ray Train workers" if s.full_workers > 1 else ""
        self.view.message(f"final training of {config.short} ({count_flops(config) / 1e9:.3f} GFLOPs) "
                          f"with schedule {self.full.recipe.name}, {source}{on} -> {self.run.final_dir}")
        self.run.final_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(self.run.final_dir / "config.yaml")
        workers = WorkerOptions(s.full_workers, s.address, s.cpus_per_trial, s.gpus_per_trial, s.storage,
                                s.max_failures)
        result = fit(config, str(self.data_root), self.full.recipe, s.seed, out_dir=self.run.final_dir, workers=workers,
                     init_state=state, progress=not self.quiet, test_split=True)
        return dict(result.to_dict(), init=init, origin_key=origin.key if state is not None and origin else None)


def run_expand(settings: ExpandSettings, *, resume: bool = False, quiet: bool = False,
               trial_fn: Any = None) -> dict[str, Any]:
    """Search, contract and train the final model; returns the JSON summary of the run."""
    session = Session(settings, resume=resume, quiet=quiet, trial_fn=trial_fn)
    run, view = session.run, session.view
    steps: list[Step] = []

    def _on_step(step: Step) -> None:
        steps.append(step)
        run.write_path(path_record(None, steps, settings.target, session.cost))
        view.step_done(step)

    t0 = time.time()
    with session:
        view.message(f"x3dsearch: searching {session.space.name} up to {settings.budget_text()} "
                     f"on {session.data_root} -> {run.path}; {session.window_line}")
        result = run_search(session.space, settings.target, session.score, cost=session.cost,
                            ceiling=settings.ceiling(),
                            evaluate_contractions=settings.evaluate_contractions,
                            land_within=settings.land_within, train_start=settings.proxy_init == Init.INHERIT,
                            on_step=_on_step)
    search_seconds = time.time() - t0
    record = path_record(result, steps, settings.target, session.cost)
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


def run_step(settings: ExpandSettings, base: X3DConfig, *, resume: bool = False, quiet: bool = False,
             trial_fn: Any = None) -> dict[str, Any]:
    """One expansion step from ``base``, taken as ``expand`` takes a step: the candidates' scores and the choice.

    With ``proxy_init="inherit"`` the base is first trained from scratch for as many proxy epochs as
    a search from the space's start would have trained it by then (:meth:`ProxyPolicy.path_epochs`),
    and every candidate inherits its weights. Nothing is skipped for cost.
    Returns ``{"base", "candidates": [{"axis", "gflops", "top1", ...}], "chosen", ...}``.
    """
    session = Session(settings, resume=resume, quiet=quiet, trial_fn=trial_fn, start=base)
    start = session.space.start
    t0 = time.time()
    with session:
        score = memoised(session.score)
        if settings.proxy_init == Init.INHERIT:
            score_start(start, score)
        step = take_step(start, 1, session.space, score)
    assert step is not None  # no ceiling: every candidate is scored
    seconds: dict[str, float] = {}  # every trial of a config counts: rungs and repeats record their own time
    for r in session.run.records():
        seconds[r["config_key"]] = seconds.get(r["config_key"], 0.0) + (r.get("seconds") or 0.0)
    summary = {"base": start.to_dict(), "init": settings.proxy_init, "schedule": session.proxy.recipe.name,
               "seed": settings.seed, "run_dir": str(session.run.path), "wall_seconds": time.time() - t0,
               "base_seconds": seconds.get(start.key, 0.0) if settings.proxy_init == Init.INHERIT else 0.0,
               "base_epochs": session.score.start_epochs if settings.proxy_init == Init.INHERIT else 0,
               "candidates": [{"axis": c.axis, "gflops": c.gflops, "top1": step.outcomes[c.key].top1,
                               "status": step.outcomes[c.key].status, "seconds": seconds.get(c.key)}
                              for c in step.candidates],
               "chosen": step.chosen.axis}
    atomic_write(session.run.path / "step.json", json.dumps(summary, indent=2))
    return summary


def _concurrency(options: Any) -> int:
    if options.max_concurrent:
        return int(options.max_concurrent)
    return max(1, int((os.cpu_count() or 1) // max(options.cpus_per_trial, 1e-9)))
