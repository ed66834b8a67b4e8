"""A second search strategy: Optuna samples the six axes in a box, a FLOP (or latency) budget constrains it.

Every proposal is costed with the run's cost (:func:`~x3dsearch.cost.count_flops` by default, or its
measured latency, :class:`~x3dsearch.latency.LatencyCost`) before anything trains: one above the target
is told to the study as ``PRUNED`` with a positive ``gflops_over_target`` (``ms_over_target``)
constraint (Optuna's feasibility-aware samplers learn from it) and never reaches training, nor counts
toward ``trials``; so is one whose window (frames x stride) is longer than the space's ``max_window``
(the data's shortest video), with a positive ``window_over_videos``. The box is first cut to the part
that can hold a feasible config (each upper bound with every other field at its lower bound; for
latency, by the latency model's estimate), which matters for small targets; what remains is rejected
at ~1 ms a proposal (for latency, after timing it once).

Feasible proposals are batched ``concurrency`` at a time into one ``Session.score`` call,
so Ray trains them in parallel and the run directory's journal records each
(``kind="optuna"``, ``axis="optuna"``, ``step`` = trial number). The study lives in
``RUN_DIR/optuna.db``: ``--resume`` reopens it, re-scores trials an interruption left
``RUNNING`` (from the journal when their proxy run had finished), and continues the trial
count. Inspect it with ``optuna-dashboard sqlite:///RUN_DIR/optuna.db``.

States: ``COMPLETE`` = proxy-trained (value = top-1), ``FAIL`` = the proxy run diverged or
failed (its compute counts toward ``trials``), ``PRUNED`` = rejected by the cost model.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from .config import X3DConfig
from .cost import FLOPS, Cost, count_flops
from .errors import SearchError, UserError
from .live import final_text
from .rundir import atomic_write
from .runner import Session, path_record
from .runspec import ExpandSettings, RunSpec, as_spec
from .search import Candidate, Outcome
from .space import SearchSpace, window, window_limit_text
from .tables import config_table

__all__ = ["SAMPLERS", "strategy_name", "feasible_bounds", "propose", "sample_configs", "run_optuna", "optuna_plan",
           "STUDY_FILE"]

SAMPLERS = ("tpe", "nsga2", "random")
STUDY_FILE = "optuna.db"
_WINDOW_CONSTRAINT = "window_over_videos"
_INTEGER = ("frames", "stride", "crop")
_MAX_REJECTIONS = 5000  # consecutive cost-model rejections before giving up (each costs ~1 ms)


def _space_bounds(space: SearchSpace) -> Mapping[str, tuple[float, float]]:
    if space.bounds is None:
        raise UserError(f"search space {space.name} has no 'bounds:' section; the optuna strategy needs one")
    return space.bounds


def _corner_cost(space: SearchSpace, bounds: Mapping[str, tuple[float, float]], cost: Cost, **values: float) -> float:
    """Estimated cost of the start config with every bounded field at its lower bound, except ``values``."""
    return cost.estimate(space.start.replace(**{name: values.get(name, low) for name, (low, _) in bounds.items()}))


def _attr(cost: Cost) -> str:
    """The trial attribute (and metric) holding a trial's cost in the target's unit: ``gflops`` or ``ms``."""
    return "gflops" if cost.name == "flops" else cost.unit


def feasible_bounds(space: SearchSpace, target: float, cost: Cost = FLOPS) -> dict[str, tuple[float, float]]:
    """The space's box with each upper bound cut to the largest value that can fit the target and the window.

    Cost grows with every field but the stride, so a value that is over the target with
    all other fields at their lower bounds is over it everywhere: cutting it loses nothing.
    Likewise frames (stride) over ``max_window`` at the lowest stride (frames) never fit.
    """
    bounds = _space_bounds(space)
    goal = target * cost.per_unit
    cheapest = _corner_cost(space, bounds, cost)
    if cheapest > goal:
        raise UserError(f"target {target:g} {cost.unit} is below the cheapest config in the bounds of "
                        f"{space.name} ({cheapest / cost.per_unit:.4f} {cost.unit})")
    out: dict[str, tuple[float, float]] = {}
    for name, (low, high) in bounds.items():
        if name == "stride" or _corner_cost(space, bounds, cost, **{name: high}) <= goal:
            out[name] = (low, high)
        elif name in _INTEGER:
            step = space.crop_multiple if name == "crop" else 1
            top = low
            while top + step <= high and _corner_cost(space, bounds, cost, **{name: top + step}) <= goal:
                top += step
            out[name] = (low, top)
        else:
            lo, hi = float(low), float(high)
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if _corner_cost(space, bounds, cost, **{name: mid}) <= goal else (lo, mid)
            out[name] = (low, lo)
    if space.max_window is not None:
        for name, other in (("frames", "stride"), ("stride", "frames")):
            longest = int(space.max_window // bounds[other][0])
            if longest < bounds[name][0]:
                raise UserError(f"no window of the bounds of {space.name} fits the videos' "
                                f"{space.max_window:g} source frames")
            out[name] = (out[name][0], min(out[name][1], longest))
    return out


def propose(trial: Trial, space: SearchSpace, bounds: Mapping[str, tuple[float, float]]) -> X3DConfig:
    """Suggest the six fields within ``bounds`` (integers, crop steps, log-scale factors)."""
    values: dict[str, Any] = {}
    for name, (low, high) in bounds.items():
        if name == "crop":
            values[name] = trial.suggest_int(name, int(low), int(high), step=space.crop_multiple)
        elif name in _INTEGER:
            values[name] = trial.suggest_int(name, int(low), int(high))
        elif low == high:
            values[name] = low
        else:
            values[name] = trial.suggest_float(name, low, high, log=True)
    return space.start.replace(**values)


def sample_configs(space: SearchSpace, count: int, max_gflops: float, seed: int = 0) -> list[X3DConfig]:
    """``count`` configs drawn by Optuna's random sampler from the space's box, each at most ``max_gflops``."""
    bounds = feasible_bounds(space, max_gflops)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs: list[X3DConfig] = []
    while len(configs) < count:
        config = propose(study.ask(), space, bounds)
        if count_flops(config) <= max_gflops * 1e9 and config not in configs:
            configs.append(config)
    return configs


def _sampler(name: str, seed: int, trials: int, batch: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE (random start, then model-based), NSGA-II sized to the trial budget, or uniform random."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(batch, min(10, trials // 3)))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2 * batch, min(50, trials // 4)))


def _directions(sampler: str) -> list[str]:
    """TPE and random search maximise top-1 alone; NSGA-II trades top-1 against GFLOPs (all under the target)."""
    return ["maximize", "minimize"] if sampler == "nsga2" else ["maximize"]


def _values(sampler: str, top1: float, gflops: float) -> list[float]:
    return [top1, gflops] if sampler == "nsga2" else [top1]


def strategy_name(sampler: str) -> str:
    """How a run is labelled in run.yaml, path.json and compare: ``random`` for random search, else ``optuna``."""
    return "random" if sampler == "random" else "optuna"


def _trained(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def _best(study: optuna.Study, cost: Cost) -> FrozenTrial | None:
    """Highest proxy top-1 among feasible finished trials; ties go to the cheaper config."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if all(v <= 0 for v in t.constraints.values())]
    return min(done, key=lambda t: (-t.values[0], t.user_attrs[_attr(cost)], t.number), default=None)


def _final_record(best: FrozenTrial | None, target: float, strategy: str, cost: Cost) -> dict[str, Any]:
    data = path_record(None, [], target, cost)
    data["strategy"] = strategy
    if best is not None:
        config = X3DConfig.from_dict(best.user_attrs["config"])
        data["final"] = {"config": config.to_dict(), "config_key": config.key, "gflops": count_flops(config) / 1e9,
                         "top1": best.values[0], "trial": best.number, _attr(cost): best.user_attrs[_attr(cost)]}
    return data


class _Search:
    """One ask/tell loop over a Session; the study is the memory, the journal the scores."""

    def __init__(self, session: Session, study: optuna.Study, sampler: str,
                 bounds: Mapping[str, tuple[float, float]]) -> None:
        self.session, self.study, self.sampler, self.bounds = session, study, sampler, bounds
        self.target, self.cost = session.spec.budget.target, session.cost

    def ask_feasible(self) -> tuple[Trial, Candidate]:
        """Ask until the cost model accepts a proposal; rejected ones are told PRUNED at once."""
        for _ in range(_MAX_REJECTIONS):
            trial = self.study.ask()
            config = propose(trial, self.session.space, self.bounds)
            spent = self.cost.of(config) / self.cost.per_unit
            for name, value in {"config": config.to_dict(), "gflops": count_flops(config) / 1e9,
                                _attr(self.cost): spent}.items():
                trial.set_user_attr(name, value)
            trial.set_constraint(f"{_attr(self.cost)}_over_target", spent - self.target)
            over = 0.0 if self.session.space.max_window is None else window(config) - self.session.space.max_window
            trial.set_constraint(_WINDOW_CONSTRAINT, over)
            if spent <= self.target and over <= 0:
                return trial, Candidate(trial.number, "optuna", config, kind="optuna")
            self.study.tell(trial, state=TrialState.PRUNED)
        raise SearchError(f"{_MAX_REJECTIONS} proposals in a row were above {self.target:g} {self.cost.unit} or "
                          f"longer than the videos; narrow the bounds of the search space")

    def score(self, batch: Sequence[tuple[int, Candidate]]) -> None:
        """Proxy-train (or read from the journal) a batch and tell the study each outcome."""
        outcomes = self.session.score([c for _, c in batch])
        for number, candidate in batch:
            outcome = outcomes.get(candidate.key, Outcome("failed", reason="no result"))
            if outcome.usable:
                self.study.tell(number, _values(self.sampler, float(outcome.top1),
                                                self.cost.of(candidate.config) / self.cost.per_unit))
            else:
                self.study.tell(number, state=TrialState.FAIL)
        self.session.run.write_path(_final_record(_best(self.study, self.cost), self.target,
                                                  strategy_name(self.sampler), self.cost))

    def stale(self) -> list[tuple[int, Candidate]]:
        """Accepted trials an interruption left RUNNING; the others are closed as they would have been."""
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "config" not in t.user_attrs:
                self.study.tell(t.number, state=TrialState.FAIL)
            elif t.user_attrs[_attr(self.cost)] > self.target or any(v > 0 for v in t.constraints.values()):
                self.study.tell(t.number, state=TrialState.PRUNED)
            else:
                config = X3DConfig.from_dict(t.user_attrs["config"])
                out.append((t.number, Candidate(t.number, "optuna", config, kind="optuna")))
        return out

    def run(self, trials: int, batch_size: int) -> None:
        stale = self.stale()
        if stale:
            self.session.view.message(f"resuming {len(stale)} interrupted trial(s)")
            self.score(stale)
        while (left := trials - _trained(self.study)) > 0:
            batch = []
            for _ in range(min(batch_size, left)):
                trial, candidate = self.ask_feasible()
                batch.append((trial.number, candidate))
            self.score(batch)


def _table(study: optuna.Study, rows: int = 10) -> str:
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: -t.values[0])[:rows]
    return config_table(f"{'trial':>5} ", ((f"{t.number:>5} ", X3DConfig.from_dict(t.user_attrs["config"]),
                                            t.user_attrs["gflops"], f"{t.values[0]:.1%}") for t in done))


def optuna_plan(spec: RunSpec, trials: int, sampler: str) -> str:
    """What ``--dry-run`` prints: the box the sampler draws from and the budget."""
    space, budget = spec.space, spec.budget
    bounds = feasible_bounds(space, budget.target, budget.cost(None))
    lines = [f"search space {space.name}: start {space.start.short}, optuna sampler {sampler}, "
             f"{trials} proxy trainings at <= {budget.text()}",
             f"{'field':<11}{'bounds':>16}{'feasible box':>16}"]
    for name, (low, high) in bounds.items():
        full = _space_bounds(space)[name]
        lines.append(f"{name:<11}{f'{full[0]:g}..{full[1]:g}':>16}{f'{low:g}..{high:.4g}':>16}")
    lines.append(f"{'window':<11}{window_limit_text(space):>32}; longer proposals are rejected")
    return "\n".join(lines)


def run_optuna(spec: RunSpec | ExpandSettings, trials: int, *, sampler: str = "tpe", resume: bool = False,
               quiet: bool = False, trial_fn: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    """Search with Optuna for ``trials`` proxy trainings (settings are resolved first), then train the best; returns
    the summary."""
    if trials < 1:
        raise UserError("--trials must be at least 1")
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    spec = as_spec(spec)
    settings, budget = spec.request, spec.budget
    study_name = f"x3dsearch-{settings.space}-{budget.target:g}{budget.unit_suffix}-seed{settings.seed}-{sampler}"
    # a batch of samples is not a choice between them: no close-call repeats (the study keeps every score)
    session = Session(spec, resume=resume, quiet=quiet, trial_fn=trial_fn, close_calls=False, expansion=False,
                      extra={"strategy": strategy_name(sampler), "sampler": sampler, "study_name": study_name})
    bounds = feasible_bounds(session.space, budget.target, session.cost)
    batch_size = session.view.concurrency
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{(session.run.path / STUDY_FILE).resolve()}",
                                study_name=study_name, load_if_exists=True,
                                sampler=_sampler(sampler, settings.seed, trials, batch_size),
                                directions=_directions(sampler))
    if study.trials:  # resumed: a sampler seeded as before would propose the configs it already tried
        study.sampler = _sampler(sampler, settings.seed + len(study.trials), trials, batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["proxy_top1", _attr(session.cost)][:len(_directions(sampler))])
    study.set_user_attr("bounds", {n: list(b) for n, b in bounds.items()})
    search = _Search(session, study, sampler, bounds)
    t0 = time.time()
    with session:
        session.view.message(f"x3dsearch: optuna ({sampler}) on {session.space.name}, {trials} proxy trainings "
                             f"at <= {budget.text()} -> {session.run.path} "
                             f"(dashboard: optuna-dashboard sqlite:///{session.run.path / STUDY_FILE}); "
                             f"{session.window_line}")
        search.run(trials, batch_size)
    best = _best(study, session.cost)
    if best is None:
        raise SearchError("no proxy training under the target succeeded; nothing to train")
    record = _final_record(best, budget.target, strategy_name(sampler), session.cost)
    session.run.write_path(record)
    final_config = X3DConfig.from_dict(best.user_attrs["config"])
    final_metrics = session.train_final(final_config) if settings.final_training else None
    table = _table(study) + final_text(final_metrics)
    summary = {"run_dir": str(session.run.path), "strategy": strategy_name(sampler), "sampler": sampler,
               "target_gflops": settings.target_gflops, "target_ms": settings.target_ms, "final": record["final"],
               "final_metrics": final_metrics, "search_seconds": time.time() - t0, "trials": _trained(study),
               "rejected": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
               "study": str(session.run.path / STUDY_FILE), "study_name": study_name, "table": table}
    atomic_write(session.run.path / "summary.json", json.dumps(summary, indent=2))
    return summary
