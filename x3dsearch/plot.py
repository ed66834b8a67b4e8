"""The accuracy/cost plot of one or more runs, like the X3D paper's Figure 2.

Every trained candidate is a point coloured by the axis that produced it (one per config,
scored at the highest rung it reached, as the search ranked it); the frontier
is a step line; the expansion path is a chain of arrows labelled with the chosen axis;
the final (contracted) model is a dotted line at its cost and a star at its full-training
accuracy; the presets' costs are faint reference lines. :func:`confusion_figure` draws what the
final model confuses, class by class. Drawn on a bare Agg canvas, so plotting never touches a
notebook's or GUI's pyplot state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from .config import X3DConfig, preset, preset_names
from .cost import count_flops, count_params
from .errors import UserError
from .latency import latencies, run_latencies
from .rundir import RunDir, read_json_object
from .runview import RunView, frontier
from .scores import Scores, headline, split_scores

__all__ = ["AXIS_COLORS", "plot_runs", "save_plot", "save_figure", "check_plot_path", "confusion_figure",
           "run_scores", "save_confusion"]

AXIS_COLORS = {"fast": "#1f77b4", "temporal": "#ff7f0e", "spatial": "#2ca02c", "depth": "#d62728",
               "width": "#9467bd", "bottleneck": "#8c564b"}
_OTHER_COLOR = "#7f7f7f"
_RUN_MARKERS = "os^Dv<>p"
_PATH_COLORS = ("#222222", "#b2182b", "#2166ac", "#1b7837", "#762a83", "#e08214")
_METRICS = {"gflops": ("GFLOPs", "GFLOPs (multiply-adds per clip, log scale)"),
            "params": ("params (M)", "parameters (millions, log scale)"),
            "ms": ("ms", "measured latency (ms per clip, log scale)")}  # a latency-costed run's; GFLOPs beside
_SUFFIXES = (".png", ".svg", ".pdf")


@dataclass
class _Run:
    """What the plot needs from one run directory, with costs already in the plot's unit."""

    name: str
    target: float | None
    data: str
    points: pd.DataFrame  # cost, top1, axis of every config trained (its score at its highest rung)
    path: list[tuple[float, float, str]]  # cost, proxy top1, axis per expansion step
    contraction: tuple[float, float | None, str] | None  # cost, proxy top1 if evaluated, axis
    final: tuple[float, float | None] | None  # cost, full-training top1


def _load(run_dir: str | Path, metric: str, name: str) -> _Run:
    view = RunView(run_dir)
    settings, path, ok, timings = view.settings, view.path, view.scores, view.timings
    if metric == "ms" and not timings:
        raise UserError(f"{run_dir} was not searched under latency (no latency.csv); --metric ms needs a run "
                        f"made with --target-ms")

    def cost(config: dict[str, Any]) -> float:
        c = X3DConfig.from_dict(config)
        if metric == "ms":
            return latencies([c.key], timings)[0]
        return count_flops(c) / 1e9 if metric == "gflops" else count_params(c) / 1e6

    if metric == "ms":
        costs = pd.Series(latencies(ok["config_key"], timings), index=ok.index, dtype=float)
    else:
        costs = pd.to_numeric(ok[metric], errors="coerce") * (1.0 if metric == "gflops" else 1e-6)
    points = pd.DataFrame({"cost": costs, "top1": ok["top1"].astype(float), "axis": ok["axis"]})
    steps = [(cost(s["config"]), s["top1"], s["axis"]) for s in path.get("steps", [])]
    contraction = path.get("contraction")
    contracted = None
    if contraction:
        outcome = (contraction.get("evaluated") or {}).get(contraction["config_key"]) or {}
        contracted = (cost(contraction["config"]), outcome.get("top1"), contraction["axis"])
    final = (cost(path["final"]["config"]), headline(view.final)[0]) if path.get("final") else None  # test if scored
    data = settings.get("data")
    return _Run(name, settings.get("target_ms" if metric == "ms" else "target_gflops"),
                Path(data).name if data else "synthetic data", points.dropna(subset=["cost"]), steps, contracted, final)


def _names(run_dirs: Sequence[str | Path]) -> list[str]:
    """Folder names, made unique with the parent folder when two runs share one."""
    names = [Path(r).resolve().name for r in run_dirs]
    return [f"{Path(r).resolve().parent.name}/{n}" if names.count(n) > 1 else n for r, n in zip(run_dirs, names)]


def _draw_path(ax: Any, run: _Run, color: str, marker: str, index: int) -> None:
    """Arrows between consecutive steps, each labelled with the axis it expanded; labels alternate sides
    and move further out for each overlaid run, so runs sharing steps do not print on each other."""
    if not run.path:
        return
    xs, ys, axes = zip(*run.path)
    ax.plot(xs, ys, ls="none", marker=marker, ms=10, mfc="none", mec=color, mew=1.4, zorder=4,
            gid=f"path:{run.name}")
    ax.annotate(f"1 {axes[0]}", (xs[0], ys[0]), xytext=(-6, 8 + 9 * index), textcoords="offset points", ha="right",
                fontsize=7, color=color, gid=f"path-label:{run.name}")
    for i in range(1, len(xs)):
        ax.annotate("", xy=(xs[i], ys[i]), xytext=(xs[i - 1], ys[i - 1]), zorder=4,
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3, "shrinkA": 5, "shrinkB": 5},
                    gid=f"path-arrow:{run.name}")
        mid = (math.sqrt(xs[i] * xs[i - 1]), (ys[i] + ys[i - 1]) / 2)
        above, away = i % 2 == 0, 6 + 9 * index
        ax.annotate(f"{i + 1} {axes[i]}", mid, xytext=(-4 if above else 4, away if above else -away),
                    textcoords="offset points", ha="right" if above else "left", va="bottom" if above else "top",
                    fontsize=7, color=color, gid=f"path-label:{run.name}")


def _draw_final(ax: Any, run: _Run, color: str) -> None:
    """The contraction (arrow when its proxy accuracy is known), the final cost and full-training star."""
    if run.contraction and run.contraction[1] is not None and run.path:
        x, y, axis = run.contraction
        ax.annotate("", xy=(x, y), xytext=run.path[-1][:2], zorder=4, gid=f"contraction:{run.name}",
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.1, "ls": "--", "shrinkA": 5})
        ax.plot([x], [y], marker="D", ms=7, mfc="white", mec=color, mew=1.4, zorder=5)
    if run.final is None:
        return
    x, top1 = run.final
    ax.axvline(x, color=color, ls=":", lw=1.2, zorder=1, gid=f"final:{run.name}")
    if top1 is not None:
        ax.scatter([x], [top1], marker="*", s=260, color="gold", edgecolors=color, linewidths=1.2, zorder=6,
                   gid=f"final-star:{run.name}")


def _run_label(run: _Run, unit: str) -> str:
    """Legend entry of a run: its name and where its final model landed (labels in the plot would collide)."""
    if run.final is None:
        return run.name
    how = f", partial step of {run.contraction[2]}" if run.contraction else ""
    return f"{run.name}: final {run.final[0]:.3g} {unit}{how} (dotted)"


def _draw_presets(ax: Any, metric: str, low: float, high: float) -> None:
    """Faint vertical lines at the presets' costs that fall within (or just outside) the plotted range."""
    for name in preset_names():
        config = preset(name)
        x = count_flops(config) / 1e9 if metric == "gflops" else count_params(config) / 1e6
        if low / 1.5 <= x <= high * 1.5:
            ax.axvline(x, color="0.82", lw=0.9, zorder=0, gid=f"preset:{name}")
            ax.annotate(f"X3D-{name}" if name != "X2D" else name, (x, 0.98), xycoords=("data", "axes fraction"),
                        xytext=(-2, 0), textcoords="offset points", rotation=90, ha="right", va="top",
                        fontsize=7, color="0.45")


def plot_runs(run_dirs: Sequence[str | Path], metric: str | None = None) -> Figure:
    """The accuracy/cost figure of one or more runs (overlaid), as a matplotlib Figure; for ``ms`` (measured
    latency; the default when every run was searched under latency) a second panel beside it in GFLOPs."""
    metric = metric or ("ms" if run_dirs and all(run_latencies(r) for r in run_dirs) else "gflops")
    if metric not in _METRICS:
        raise UserError(f"unknown metric {metric!r}; choose from {', '.join(_METRICS)}")
    if not run_dirs:
        raise UserError("give at least one run directory")
    metrics = [metric, "gflops"] if metric == "ms" else [metric]
    fig = Figure(figsize=(9.5 * len(metrics), 6.2), dpi=150)
    FigureCanvasAgg(fig)
    for i, shown in enumerate(metrics):
        _draw_runs(fig.add_subplot(1, len(metrics), i + 1),
                   [_load(r, shown, n) for r, n in zip(run_dirs, _names(run_dirs))], shown)
    fig.tight_layout()
    return fig


def _draw_runs(ax: Any, runs: Sequence[_Run], metric: str) -> None:
    """Points, frontiers, paths, finals, presets and targets of ``runs`` on ``ax``, costs in ``metric``."""
    ax.set_xscale("log")
    run_handles = []
    for i, run in enumerate(runs):
        color, marker = _PATH_COLORS[i % len(_PATH_COLORS)], _RUN_MARKERS[i % len(_RUN_MARKERS)]
        for axis, group in run.points.groupby("axis", sort=False):
            ax.scatter(group["cost"], group["top1"], s=20, marker=marker, alpha=0.7, edgecolors="none",
                       color=AXIS_COLORS.get(str(axis), _OTHER_COLOR), zorder=3, gid=f"points:{run.name}:{axis}")
        front = frontier(run.points, cost="cost")
        ax.step(front["cost"], front["top1"], where="post", color=color, lw=1.0, alpha=0.55, ls="--", zorder=2,
                gid=f"frontier:{run.name}")
        _draw_path(ax, run, color, marker, i)
        _draw_final(ax, run, color)
        run_handles.append(Line2D([], [], color=color, marker=marker, mfc="none",
                                  label=_run_label(run, _METRICS[metric][0])))
    costs = pd.concat([r.points["cost"] for r in runs] + [pd.Series([r.final[0] for r in runs if r.final])])
    if costs.empty:
        raise UserError(f"no trained configs to plot in {', '.join(r.name for r in runs)}")
    if metric != "ms":  # the presets' latency is not in a run's table
        _draw_presets(ax, metric, float(costs.min()), float(costs.max()))
    if metric != "params":
        for target in sorted({r.target for r in runs if r.target}):
            ax.axvline(target, color="0.3", lw=0.8, ls="-.", zorder=1, gid=f"target:{target:g}")
    tops = pd.concat([r.points["top1"] for r in runs])
    if not tops.empty and tops.max() <= 1.0:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    unit, xlabel = _METRICS[metric]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (proxy training; ★ full training)")
    targets = ", ".join(f"{t:g}" for t in sorted({r.target for r in runs if r.target}))
    datas = ", ".join(sorted({r.data for r in runs}))
    budget = f" to {targets} {'ms per clip' if metric == 'ms' else 'GFLOPs'}" if targets else ""
    ax.set_title(f"X3D progressive expansion{budget} on {datas}", fontsize=11)
    ax.grid(alpha=0.25, which="both")
    present = [a for a in AXIS_COLORS if any((r.points["axis"] == a).any() for r in runs)]
    others = sorted({str(a) for r in runs for a in r.points["axis"]} - set(AXIS_COLORS))
    axis_handles = [Line2D([], [], ls="none", marker="o", color=AXIS_COLORS.get(a, _OTHER_COLOR), label=a)
                    for a in present + others]
    extra = [Line2D([], [], color="0.4", ls="--", lw=1, label="frontier"),
             Line2D([], [], ls="none", marker="*", ms=12, color="gold", mec="0.2",
                    label="final, full training (test top-1, else val)"),
             Line2D([], [], color="0.3", ls="-.", lw=0.8, label="target")]
    axis_legend = ax.legend(handles=axis_handles, title="expanded axis", loc="lower right", fontsize=7,
                            title_fontsize=8, framealpha=0.85)
    ax.add_artist(axis_legend)
    ax.legend(handles=run_handles + extra, title="run", loc="upper left", fontsize=7, title_fontsize=8,
              framealpha=0.85)


def save_figure(fig: Figure, out: str | Path, dpi: float | None = None) -> Path:
    """Save ``fig`` in the format of ``out``'s extension (.png, .svg, .pdf; callers check it first with
    :func:`check_plot_path`, before drawing); a path that cannot be written is a UserError."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    except OSError as err:
        raise UserError(f"cannot write the plot {out}: {err.strerror or err}") from None
    return out


def check_plot_path(out: str | Path) -> None:
    """A plot file's name must say its format (.png, .svg, .pdf)."""
    if Path(out).suffix.lower() not in _SUFFIXES:
        raise UserError(f"plot file must end in {', '.join(_SUFFIXES)}, got {Path(out).name}")


def save_plot(run_dirs: Sequence[str | Path], out: str | Path, metric: str | None = None) -> Path:
    """Draw :func:`plot_runs` and save it in the format of ``out``'s extension (.png, .svg, .pdf)."""
    check_plot_path(out)
    return save_figure(plot_runs(run_dirs, metric), out)


def _grouped_order(scores: Scores) -> list[int]:
    """Indices of the classes to show, each group's members together (in the groups' order), then the rest;
    classes without a video or a prediction are left out."""
    names = [c for members in scores.groups.values() for c in members]
    names += [c for c in scores.classes if c not in names]
    matrix = np.asarray(scores.confusion)
    used = matrix.sum(axis=0) + matrix.sum(axis=1) > 0
    return [scores.classes.index(c) for c in names if c in scores.classes and used[scores.classes.index(c)]]


def confusion_figure(scores: Scores, title: str) -> Figure:
    """The confusion matrix as a heat map: each row (a true class) in percent of its videos, with the video
    counts in the cells, each class's top-1 beside its row and lines between the declared groups."""
    order = _grouped_order(scores)
    counts = np.asarray(scores.confusion)[np.ix_(order, order)]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    names = [scores.classes[i] for i in order]
    per_class = scores.per_class()
    side = 2.2 + 0.48 * len(names)
    fig = Figure(figsize=(side + 1.6, side), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.55 else "0.15")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), [f"{n} ({per_class[n]:.0%})" if n in per_class else n for n in names],
                  fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (its top-1)")
    edge = 0
    for members in scores.groups.values():
        edge += sum(1 for c in members if c in names)
        if 0 < edge < len(names):
            for line in (ax.axhline, ax.axvline):
                line(edge - 0.5, color="0.3", lw=0.9)
    groups = ", ".join(f"{g} {v:.0%}" for g, v in scores.per_group().items())
    ax.set_title(f"{title}\n{scores.split}: top-1 {scores.top1:.1%} over {scores.videos} videos"
                 + (f" ({groups})" if groups else ""), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, format=PercentFormatter(1.0)).set_label(
        "share of the true class's videos", fontsize=8)
    fig.tight_layout()
    return fig


def run_scores(run_dir: str | Path, split: str | None = None) -> tuple[Scores, str]:
    """The final model's scores on ``split`` (default: test where it exists, else val) and a title naming it.

    ``run_dir`` is a run directory (its ``final/``) or a training's output folder (``train --out``).
    """
    metrics = RunView(run_dir).final if RunDir(run_dir).exists() else {}
    if not metrics and (Path(run_dir) / "metrics.json").is_file():
        metrics = read_json_object(Path(run_dir) / "metrics.json")
    if not metrics:
        raise UserError(f"{run_dir} has no final metrics (final/metrics.json or metrics.json)")
    scores = {s.split: s for s in split_scores(metrics)}
    if not scores:
        raise UserError(f"{run_dir}: its metrics predate per-class results; score the model with "
                        f"'x3dsearch evaluate'")
    chosen = split or ("test" if "test" in scores else "val")
    if chosen not in scores:
        raise UserError(f"{run_dir}: no {chosen} results in its metrics (the data has no {chosen}.csv)")
    config = X3DConfig.from_dict(metrics["config"]).short if metrics.get("config") else Path(run_dir).name
    return scores[chosen], f"{config}, {metrics.get('schedule') or 'final training'}"


def save_confusion(run_dir: str | Path, out: str | Path, split: str | None = None) -> Path:
    """Draw the final model's :func:`confusion_figure` on ``split`` into ``out`` (.png, .svg, .pdf)."""
    check_plot_path(out)
    return save_figure(confusion_figure(*run_scores(run_dir, split)), out)
