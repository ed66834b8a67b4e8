"""Compare search runs at equal proxy compute: anytime curves, frontiers and one table.

Proxy compute of a trial is its journaled ``seconds`` times the run's ``cpus_per_trial``
(CPU-seconds; GPU-seconds when trials held GPUs); a config trained over several rungs or
seeds has one trial for each, each with its own seconds. A run's anytime curve is the best
proxy top-1 among trained configs at or under the target after each trial, in the order
trials ended, each config with its score at the highest rung it had reached (the mean over
its seeds there); comparing every run at the smallest total compute any of them spent makes
the strategies meet at equal cost. Each run's final model is quoted on the held-out test split
where its metrics have one, else on val (the split the search selected on).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .errors import UserError
from .runview import RunView, config_scores, frontier as pareto, numeric_column
from .scores import headline
from .trial import SPENT

__all__ = ["proxy_trials", "anytime_curve", "best_at", "frontier", "compare_table", "plot_compare",
           "compare_runs"]

def proxy_trials(journal: pd.DataFrame, cpus_per_trial: float) -> pd.DataFrame:
    """Finished proxy attempts in the order they ended, with ``compute`` and its running sum."""
    done = journal[journal["status"].isin(SPENT)].copy()
    done["compute"] = numeric_column(done, "seconds").fillna(0.0) * cpus_per_trial
    done = done.sort_values("ended", kind="stable").reset_index(drop=True)
    done["cumulative"] = done["compute"].cumsum()
    return done


def anytime_curve(trials: pd.DataFrame, target_gflops: float, tolerance: float = 0.0) -> pd.DataFrame:
    """``cumulative`` compute against the best top-1 so far at cost <= target (NaN before any): after each
    trial, every config under the target scored by :func:`~x3dsearch.runview.config_scores` on the trials so far."""
    under = trials[trials["gflops"] <= target_gflops * (1 + tolerance)]
    best = [config_scores(under.loc[:end])["top1"].max() for end in trials.index]
    return pd.DataFrame({"cumulative": trials["cumulative"], "best_top1": best})


def best_at(curve: pd.DataFrame, budget: float) -> float:
    """Best top-1 under the target once ``budget`` compute was spent (NaN if none yet)."""
    spent = curve[curve["cumulative"] <= budget * (1 + 1e-9)]["best_top1"].dropna()
    return float(spent.iloc[-1]) if len(spent) else math.nan


def frontier(trials: pd.DataFrame) -> pd.DataFrame:
    """Pareto front of trained configs (each at its highest rung): none other is as cheap and more accurate."""
    return pareto(config_scores(trials))[["gflops", "top1", "config_key"]]


def compare_table(runs: Mapping[str, pd.DataFrame], strategies: Mapping[str, str], target_gflops: float,
                  tolerance: float = 0.0, finals: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per run: trials, compute, best under the target at the common budget and at the end, and its
    final model's top-1 from ``finals`` (final metrics by run) with the split it is on (test where it exists)."""
    curves = {name: anytime_curve(t, target_gflops, tolerance) for name, t in runs.items()}
    common = min(float(t["compute"].sum()) for t in runs.values())
    rows = []
    for name, trials in runs.items():
        curve = curves[name]
        final = (finals or {}).get(name) or {}
        final_top1, final_split = headline(final)
        rows.append({"run": name, "strategy": strategies[name], "trials": len(trials),
                     "configs": trials["config_key"].nunique(),
                     "compute_s": float(trials["compute"].sum()), "common_budget_s": common,
                     "best_top1_at_common": best_at(curve, common),
                     "best_top1_final": best_at(curve, math.inf),
                     "frontier_points": len(frontier(trials)),
                     "final_top1": final_top1, "final_split": final_split if final else None})
    return pd.DataFrame(rows)


def plot_compare(runs: Mapping[str, pd.DataFrame], target_gflops: float, out: str | Path,
                 tolerance: float = 0.0) -> Path:
    """Two panels: anytime curves against proxy compute, and each run's top-1/GFLOPs frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    common = min(float(t["compute"].sum()) for t in runs.values())
    for name, trials in runs.items():
        curve = anytime_curve(trials, target_gflops, tolerance)
        line, = left.step(curve["cumulative"], curve["best_top1"], where="post", label=name)
        front = frontier(trials)
        ok = config_scores(trials)
        right.scatter(ok["gflops"], ok["top1"], s=10, alpha=0.35, color=line.get_color())
        right.step(front["gflops"], front["top1"], where="post", color=line.get_color(), label=name)
    left.axvline(common, color="grey", linestyle=":", label="common budget")
    left.set(xlabel="cumulative proxy compute (CPU/GPU-seconds)", ylabel="best proxy top-1 under target",
             title=f"anytime: best at <= {target_gflops:g} GFLOPs")
    right.axvline(target_gflops, color="grey", linestyle=":", label="target")
    right.set(xscale="log", xlabel="GFLOPs", ylabel="proxy top-1", title="frontier of trained configs")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = "compare.png",
                 target_gflops: float | None = None, tolerance: float = 0.01) -> tuple[pd.DataFrame, Path]:
    """Load run directories, check they share a target, and return the table and the plot path."""
    runs, strategies, finals, targets = {}, {}, {}, set()
    for run_dir in run_dirs:
        view = RunView(run_dir)
        settings = view.settings
        name = _unique(Path(run_dir).resolve().name, runs)
        runs[name] = proxy_trials(view.journal, float(settings.get("cpus_per_trial") or 1.0))
        strategies[name] = settings.get("strategy", "expand")
        finals[name] = view.final
        targets.add(settings.get("target_gflops"))
        if target_gflops is None and settings.get("target_ms") is not None:
            raise UserError(f"{run_dir} was searched under a latency target ({settings['target_ms']:g} ms); compare "
                            f"ranks runs under a FLOP budget: pass --target-gflops")
    if target_gflops is None:
        if len(targets) != 1:
            raise UserError(f"the runs have different targets ({', '.join(map(str, sorted(targets)))}); "
                            f"pass --target-gflops")
        target_gflops = float(targets.pop())
    empty = [name for name, trials in runs.items() if trials.empty]
    if empty:
        raise UserError(f"no finished proxy trainings in {', '.join(empty)}")
    table = compare_table(runs, strategies, target_gflops, tolerance, finals)
    return table, plot_compare(runs, target_gflops, out, tolerance)


def _unique(name: str, taken: Mapping[str, object]) -> str:
    """``name``, or ``name#2``... when two run directories share a folder name."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}#{k}"
    return candidate
