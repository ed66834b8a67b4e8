"""Compare search runs at equal proxy compute: anytime curves, frontiers and one table.

Proxy compute of a trial is its journaled ``seconds`` times the run's ``cpus_per_trial``
(CPU-seconds; GPU-seconds when trials held GPUs), or, where every compared run's CPU trials measured it,
its ``cpu_seconds`` (CPU time, which waiting for a busy core does not inflate); a config trained over
several rungs or seeds has one trial for each, each with its own seconds. A run's anytime curve is the best
proxy top-1 among trained configs at or under the target after each trial, in the order
trials ended, each config with its score at the highest rung it had reached (the mean over
its seeds there); comparing every run at the smallest total compute any of them spent makes
the strategies meet at equal cost. Runs searched under a latency target compare under an ms budget,
each trial costed by its run's measured latency (its ``latency.csv``), with the GFLOPs frontier beside
the ms one; a FLOP budget compares any runs. Each run's final model is quoted on the held-out test split
where its metrics have one, else on val (the split the search selected on).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from .errors import UserError
from .latency import latencies
from .runview import RunView, config_scores, frontier as pareto, numeric_column
from .scores import headline
from .trial import SPENT

__all__ = ["WALL", "CPU", "proxy_trials", "clock_of", "anytime_curve", "best_at", "frontier", "compare_table",
           "plot_compare", "compare_runs"]

_UNITS = {"gflops": "GFLOPs", "ms": "ms per clip"}
WALL, CPU = "wall", "cpu"  # proxy compute as wall seconds x CPUs per trial, or as measured CPU time
_TIMING = ("latency_device", "latency_batch", "latency_threads", "latency_node")


def proxy_trials(journal: pd.DataFrame, cpus_per_trial: float, clock: str = WALL) -> pd.DataFrame:
    """Finished proxy attempts in the order they ended, with ``compute`` and its running sum: each attempt's
    wall seconds times ``cpus_per_trial`` (``clock`` "wall") or its measured CPU-seconds ("cpu")."""
    done = journal[journal["status"].isin(SPENT)].copy()
    if clock == CPU:
        done["compute"] = numeric_column(done, "cpu_seconds").fillna(0.0)
    else:
        done["compute"] = numeric_column(done, "seconds").fillna(0.0) * cpus_per_trial
    done = done.sort_values("ended", kind="stable").reset_index(drop=True)
    done["cumulative"] = done["compute"].cumsum()
    return done


def clock_of(journals: Iterable[pd.DataFrame], settings: Iterable[Mapping[str, Any]]) -> str:
    """``CPU`` when every finished attempt of every run that timed itself measured its CPU time (a lost worker's
    attempt times nothing) and no run's trials held GPUs, else ``WALL``: one clock for all the runs compared."""
    for journal, run_settings in zip(journals, settings, strict=True):
        done = journal[journal["status"].isin(SPENT)]
        untimed = numeric_column(done, "cpu_seconds").isna() & numeric_column(done, "seconds").notna()
        if float(run_settings.get("gpus_per_trial") or 0.0) > 0 or untimed.any():
            return WALL
    return CPU


def anytime_curve(trials: pd.DataFrame, target: float, tolerance: float = 0.0, cost: str = "gflops") -> pd.DataFrame:
    """``cumulative`` compute against the best top-1 so far at ``cost`` <= target (NaN before any): after each
    trial, every config under the target scored by :func:`~x3dsearch.runview.config_scores` on the trials so far."""
    under = trials[trials[cost] <= target * (1 + tolerance)]
    best = [config_scores(under.loc[:end])["top1"].max() for end in trials.index]
    return pd.DataFrame({"cumulative": trials["cumulative"], "best_top1": best})


def best_at(curve: pd.DataFrame, budget: float) -> float:
    """Best top-1 under the target once ``budget`` compute was spent (NaN if none yet)."""
    spent = curve[curve["cumulative"] <= budget * (1 + 1e-9)]["best_top1"].dropna()
    return float(spent.iloc[-1]) if len(spent) else math.nan


def frontier(trials: pd.DataFrame, cost: str = "gflops") -> pd.DataFrame:
    """Pareto front of trained configs (each at its highest rung): none other is as cheap and more accurate."""
    return pareto(config_scores(trials), cost)[[cost, "top1", "config_key"]]


def compare_table(runs: Mapping[str, pd.DataFrame], strategies: Mapping[str, str], target: float,
                  tolerance: float = 0.0, finals: Mapping[str, Mapping[str, Any]] | None = None,
                  cost: str = "gflops") -> pd.DataFrame:
    """One row per run: trials, compute, best under the target (in ``cost``) at the common budget and at the end,
    and its final model's top-1 from ``finals`` (final metrics by run) with the split it is on (test if any)."""
    curves = {name: anytime_curve(t, target, tolerance, cost) for name, t in runs.items()}
    common = min(float(t["compute"].sum()) for t in runs.values())
    rows = []
    for name, trials in runs.items():
        curve = curves[name]
        final = (finals or {}).get(name) or {}
        final_top1, final_split = headline(final)
        rows.append({"run": name, "strategy": strategies[name], "budget": f"{target:g} {_UNITS[cost]}",
                     "trials": len(trials),
                     "configs": trials["config_key"].nunique(),
                     "compute_s": float(trials["compute"].sum()), "common_budget_s": common,
                     "best_top1_at_common": best_at(curve, common),
                     "best_top1_final": best_at(curve, math.inf),
                     "frontier_points": len(frontier(trials, cost)),
                     "final_top1": final_top1, "final_split": final_split if final else None})
    return pd.DataFrame(rows)


def plot_compare(runs: Mapping[str, pd.DataFrame], target: float, out: str | Path,
                 tolerance: float = 0.0, cost: str = "gflops") -> Path:
    """Anytime curves against proxy compute and each run's top-1/cost frontier; under an ms budget the
    GFLOPs frontier beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = [cost, "gflops"] if cost == "ms" else [cost]
    fig, (left, *rights) = plt.subplots(1, 1 + len(costs), figsize=(5.5 * (1 + len(costs)), 4.2))
    common = min(float(t["compute"].sum()) for t in runs.values())
    for name, trials in runs.items():
        curve = anytime_curve(trials, target, tolerance, cost)
        line, = left.step(curve["cumulative"], curve["best_top1"], where="post", label=name)
        ok = config_scores(trials)
        for right, shown in zip(rights, costs):
            front = frontier(trials, shown)
            right.scatter(ok[shown], ok["top1"], s=10, alpha=0.35, color=line.get_color())
            right.step(front[shown], front["top1"], where="post", color=line.get_color(), label=name)
    left.axvline(common, color="grey", linestyle=":", label="common budget")
    left.set(xlabel="cumulative proxy compute (CPU/GPU-seconds)", ylabel="best proxy top-1 under target",
             title=f"anytime: best at <= {target:g} {_UNITS[cost]}")
    rights[0].axvline(target, color="grey", linestyle=":", label="target")
    for right, shown in zip(rights, costs):
        right.set(xscale="log", xlabel=_UNITS[shown], ylabel="proxy top-1", title="frontier of trained configs")
    for ax in (left, *rights):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from .plot import save_figure

    try:
        return save_figure(fig, out, dpi=120)
    finally:
        plt.close(fig)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = "compare.png", target_gflops: float | None = None,
                 tolerance: float = 0.01, target_ms: float | None = None) -> tuple[pd.DataFrame, Path]:
    """Load run directories, check they share a target, and return the table and the plot path; under an ms
    budget (``target_ms``, or runs all searched under latency) each trial is costed by its run's latency table."""
    from .plot import check_plot_path

    check_plot_path(out)  # before any run is read
    if not 0 <= tolerance < math.inf or any(t is not None and not 0 < t < math.inf for t in (target_gflops, target_ms)):
        raise UserError("--tolerance must be a finite number >= 0 and a target a positive number")
    views = {}
    for run_dir in run_dirs:
        views[_unique(Path(run_dir).resolve().name, views)] = RunView(run_dir)
    cost, target = _budget(views, target_gflops, target_ms)
    clock = clock_of([v.journal for v in views.values()], [v.settings for v in views.values()])
    runs = {}
    for name, view in views.items():
        trials = proxy_trials(view.journal, float(view.settings.get("cpus_per_trial") or 1.0), clock)
        runs[name] = trials.assign(ms=latencies(trials["config_key"], view.timings)) if cost == "ms" else trials
    empty = [name for name, trials in runs.items() if trials.empty]
    if empty:
        raise UserError(f"no finished proxy trainings in {', '.join(empty)}")
    strategies = {name: view.settings.get("strategy", "expand") for name, view in views.items()}
    table = compare_table(runs, strategies, target, tolerance, {n: v.final for n, v in views.items()}, cost)
    table.insert(table.columns.get_loc("compute_s"), "clock", clock)
    return table, plot_compare(runs, target, out, tolerance, cost)


def _budget(views: Mapping[str, RunView], target_gflops: float | None,
            target_ms: float | None) -> tuple[str, float]:
    """(cost column, target): the budget given, else the runs' common target (in ms when all ran under latency)."""
    if target_gflops is not None and target_ms is not None:
        raise UserError("give one budget: --target-gflops or --target-ms")
    timed = {name for name, view in views.items() if view.timings}
    if target_ms is None and target_gflops is None and timed and timed != set(views):
        raise UserError(f"{', '.join(sorted(timed))} searched under latency and the others under FLOPs; "
                        f"pass --target-gflops to compare them under a FLOP budget")
    if target_ms is not None or (target_gflops is None and timed):
        untimed = sorted(set(views) - timed)
        if untimed:
            raise UserError(f"{', '.join(untimed)} was not searched under latency (no latency.csv); compare it "
                            f"under a FLOP budget with --target-gflops")
        how = {tuple(view.settings.get(k) for k in _TIMING) for view in views.values()}
        machines = {(t.device_name, t.reference_ms) for view in views.values() for t in view.timings.values()}
        if len(how) != 1 or len(machines) != 1:
            raise UserError("the runs timed latency differently (device model, node, batch, threads or calibration "
                            "of the reference network); compare them under a FLOP budget with --target-gflops")
        return "ms", target_ms if target_ms is not None else _common(views, "target_ms", "--target-ms")
    return "gflops", target_gflops if target_gflops is not None else _common(views, "target_gflops", "--target-gflops")


def _common(views: Mapping[str, RunView], key: str, option: str) -> float:
    """The runs' shared ``key`` target, or a UserError asking for ``option``."""
    targets = {view.settings.get(key) for view in views.values()}
    if len(targets) != 1 or None in targets:
        raise UserError(f"the runs have different targets ({', '.join(map(str, sorted(targets, key=str)))}); "
                        f"pass {option}")
    return float(targets.pop())


def _unique(name: str, taken: Mapping[str, object]) -> str:
    """``name``, or ``name#2``... when two run directories share a folder name."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}#{k}"
    return candidate
