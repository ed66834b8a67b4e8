"""The report of a run: how its proxy scored, its expansion path, frontier, failures, compute, and what
the final model gets right per class group (per class on request) on val and the held-out test split.

Everything is read through :class:`x3dsearch.runview.RunView`; this module only lays it out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .config import X3DConfig
from .cost import count_params
from .errors import UserError
from .latency import Timing, latencies
from .runview import RunView, config_seconds, frontier, group_scores, numeric_column
from .scores import headline, headline_text, render_scores, scores_table, split_scores
from .tables import SHAPE, shape_columns
from .trial import Init, Status

__all__ = ["describe_provenance", "run_report", "describe_final", "render", "REPORT_FORMATS"]

REPORT_FORMATS = ("table", "csv", "markdown", "json")
_SECTIONS = ("path", "box", "frontier", "failures", "final")


def _shape(config: Mapping[str, Any]) -> dict[str, Any]:
    """The shape columns of a config recorded as a mapping (:func:`~x3dsearch.tables.shape_columns`)."""
    return shape_columns(X3DConfig.from_dict(config))


def _number(value: Any) -> float:
    """``value`` as a float; NaN for None (older path.json files lack rung and seeds)."""
    return math.nan if value is None else float(value)


def _path_rows(path: Mapping[str, Any], scores: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(config key, row) of the trained start, each step's chosen candidate and the contraction."""
    rows = [(r["config_key"], {"step": "0", "axis": "start", **_shape(r["config"]), "gflops": r["gflops"],
                               "params": r["params"], "top1": r["top1"], "rung": r["rung"], "seeds": r["seeds"]})
            for _, r in scores[scores["kind"] == "start"].iterrows()]
    for s in path.get("steps", []):
        chosen = next((c for c in s.get("candidates", []) if c["config_key"] == s["config_key"]), {})
        fraction = s.get("fraction", 1.0)  # path.json files before bounded steps had full steps only
        axis = s["axis"] if fraction == 1 else f"{s['axis']}x{fraction:.2f}"
        rows.append((s["config_key"], {"step": str(s["step"]), "axis": axis, **_shape(s["config"]),
                                       "gflops": s["gflops"], "params": s["params"], "top1": s.get("top1"),
                                       "rung": _number(chosen.get("rung")), "seeds": _number(chosen.get("seeds"))}))
    contraction = path.get("contraction")
    if contraction:
        outcome = (contraction.get("evaluated") or {}).get(contraction["config_key"]) or {}
        rows.append((contraction["config_key"], {
            "step": contraction.get("kind", "contract"), "axis": contraction["axis"],
            **_shape(contraction["config"]),
            "gflops": contraction["gflops"], "params": count_params(X3DConfig.from_dict(contraction["config"])),
            "top1": outcome.get("top1"), "rung": _number(outcome.get("epochs")),
            "seeds": _number(outcome.get("seeds"))}))
    return rows


def _with_latency(table: pd.DataFrame, keys: pd.Series | list[str], timings: Mapping[str, Timing]) -> pd.DataFrame:
    """``table`` with each row's measured ``ms`` per clip beside its ``gflops``, for a latency-costed run."""
    if not timings:
        return table
    out = table.copy()
    out.insert(list(out.columns).index("gflops") + 1, "ms", latencies(keys, timings))
    return out


_MAX_GROUP_COLUMNS = 6  # more class groups than this stay in the journal, out of the path's table


def _proxy_groups(groups: pd.DataFrame, key: str, top1: float) -> dict[str, float]:
    """A path row's ``proxy <group>`` columns: its config's group scores, none where the row shows no top-1 (a
    landing that was not evaluated, though its config may have trained as a candidate)."""
    return {f"proxy {g}": math.nan if math.isnan(top1) else groups[g].get(key, math.nan) for g in groups.columns}


def _path_table(path: Mapping[str, Any], journal: pd.DataFrame, scores: pd.DataFrame,
                timings: Mapping[str, Timing]) -> pd.DataFrame:
    """The path, one row per model, with how its score was obtained (rung, seeds, init), its validation top-1 per
    class group when the data declares a few (what the proxy could see), its compute and (a latency-costed run)
    its measured latency."""
    seconds = config_seconds(journal)
    inits = dict(zip(scores["config_key"], scores["init"])) if "init" in scores else {}
    keyed = _path_rows(path, scores)
    groups = group_scores(journal)
    groups = groups if len(groups.columns) <= _MAX_GROUP_COLUMNS else groups.iloc[:, :0]
    rows = [dict(row, init=inits.get(key) or "", seconds=seconds.get(key, math.nan),
                 **_proxy_groups(groups, key, _number(row["top1"]))) for key, row in keyed]
    columns = ["step", "axis", *SHAPE, "gflops", "params", "top1", *(f"proxy {g}" for g in groups.columns),
               "rung", "seeds", "init", "seconds"]
    return _with_latency(pd.DataFrame(rows, columns=columns), [key for key, _ in keyed], timings)


def _failures(path: Mapping[str, Any], journal: pd.DataFrame, ceiling: str | None) -> pd.DataFrame:
    """Attempts that did not end ``ok`` and candidates never trained (above the ceiling)."""
    columns = ["step", "axis", "gflops", "status", "attempt", "rung", "reason"]
    bad = journal[journal["status"] != Status.OK].reindex(columns=columns)
    reason = f"above the ceiling ({ceiling}), not trained" if ceiling else "not trained"
    skipped = [{"step": s["step"], "axis": c["axis"], "gflops": c["gflops"], "status": Status.SKIPPED.value,
                "attempt": 0, "reason": reason}
               for s in path.get("steps", []) for c in s.get("candidates", []) if c["status"] == Status.SKIPPED]
    frames = [f for f in (bad, pd.DataFrame(skipped, columns=columns)) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _box_notes(path: Mapping[str, Any]) -> pd.DataFrame:
    """Per step, each axis the space's box cut to a partial step, left out at its bound, or merged with another,
    and (axis ``lookahead``) what a look one step ahead showed."""
    rows = [{"step": s["step"], "axis": axis, "note": note} for s in path.get("steps", [])
            for axis, note in [*(s.get("notes") or {}).items(), *([("lookahead", s["lookahead"])]
                                                                   if s.get("lookahead") else [])]]
    return pd.DataFrame(rows, columns=["step", "axis", "note"])


def _totals(journal: pd.DataFrame, settings: Mapping[str, Any], final: Mapping[str, Any]) -> dict[str, Any]:
    """Trials and compute: proxy attempts' seconds x the run's per-trial CPUs/GPUs (what they reserved), the CPU time
    they recorded (attempts that recorded none, e.g. on a lost node, counted apart), and the final training's seconds
    x its threads and workers (the per-trial CPUs where it recorded none) beside the CPU time it recorded."""
    cpus = float(settings.get("cpus_per_trial") or 1.0)
    gpus = float(settings.get("gpus_per_trial") or 0.0)
    proxy_s = float(numeric_column(journal, "seconds").fillna(0.0).sum())
    used = numeric_column(journal, "cpu_seconds")
    final_s = float(final.get("seconds") or 0.0)
    final_cpus = float(final.get("threads") or cpus) * int(final.get("world_size") or 1)
    final_used = final.get("cpu_seconds")
    statuses = journal["status"].value_counts().to_dict()
    return {"trials": int(journal["config_key"].nunique()), "attempts": int(len(journal)),
            "ok": int(statuses.get(Status.OK, 0)),
            "not_ok": int(len(journal) - statuses.get(Status.OK, 0)),
            "proxy_hours": proxy_s / 3600, "proxy_cpu_hours": proxy_s * cpus / 3600,
            "proxy_cpu_hours_used": float(used.sum()) / 3600 if used.notna().any() else None,
            "proxy_attempts_without_cpu_time": int(used.isna().sum()),
            "proxy_gpu_hours": proxy_s * gpus / 3600, "final_hours": final_s / 3600,
            "final_cpu_hours": final_s * final_cpus / 3600,
            "final_cpu_hours_used": float(final_used) / 3600 if final_used is not None else None,
            "final_gpu_hours": final_s * gpus / 3600,
            "final_top1": headline(final)[0], "final_split": headline(final)[1] if final else None,
            "final_val_top1": final.get("top1"), "target_gflops": settings.get("target_gflops"),
            **({"target_ms": settings["target_ms"], "latency_device": settings.get("latency_device"),
                "latency_batch": settings.get("latency_batch"), "latency_threads": settings.get("latency_threads")}
               if settings.get("target_ms") is not None else {})}


def _frontier_table(scores: pd.DataFrame, timings: Mapping[str, Timing]) -> pd.DataFrame:
    """The frontier of trained configs (scores at their highest rung) with each config's shape; for a
    latency-costed run the frontier in measured ms, GFLOPs beside."""
    columns = ["step", "axis", "kind", "gflops", *(["ms"] if timings else []), "params", "top1", "rung", "seeds"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    front = frontier(_with_latency(scores, scores["config_key"], timings), "ms" if timings else "gflops")
    shapes = [_shape(c) if isinstance(c, Mapping) else {} for c in front.get("config", [{}] * len(front))]
    return pd.concat([front[columns], pd.DataFrame(shapes)], axis=1)


def _init_text(label: str) -> str:
    """``inherit`` -> ``inherited weights``; ``scratch: why`` -> ``scratch (why)``."""
    if label == Init.INHERIT:
        return "inherited weights"
    return label.replace(": ", " (", 1) + ")" if ": " in label else label


def describe_provenance(prov: Mapping[str, Any]) -> list[str]:
    """The proxy mechanism and the final training's start as sentences (a report's or export's header)."""
    epochs = f" ({prov['proxy_epochs']} epochs)" if prov.get("proxy_epochs") else ""
    if prov.get("epoch_range"):
        rules = [f"{e} under {g:g} GFLOPs" for g, e in prov.get("epochs_under") or ()]
        if prov.get("step_compute"):
            rules.append(f"step_compute {prov['step_compute']:g} GFLOP-clips")
        stretch = "; rungs stretch alike" if prov.get("rungs") else ""
        low, high = prov["epoch_range"]
        epochs = f" ({low}-{high} epochs by step cost, {', '.join(rules)}{stretch})"
    parts = [f"schedule {prov['proxy_schedule'] or 'unknown'}{epochs}"]
    inherited, scratch, fallbacks = prov["configs_inherited"], prov["configs_from_scratch"], prov["scratch_fallbacks"]
    if inherited:
        note = f", {fallbacks} of them as a fallback" if fallbacks else ""
        parts.append(f"weights inherited along the path ({inherited} configs inherited, {scratch} from scratch{note})")
    elif prov["proxy_init"] == Init.INHERIT and not scratch:  # a journal from before inits were recorded
        parts.append("weights inherited along the path")
    elif fallbacks:
        parts.append(f"every candidate trained from scratch ({fallbacks} as a fallback)")
    else:  # scratch mode, or nothing had a parent to inherit from (e.g. Optuna's samples)
        parts.append("every candidate trained from scratch")
    if prov.get("rank_by") == "nll":
        parts.append("candidates ranked by their val NLL (lower wins), not top-1")
    if prov.get("fewer_params_within"):
        unit = " nats of val NLL" if prov.get("rank_by") == "nll" else " top-1"
        parts.append(f"candidates within {prov['fewer_params_within']:g}{unit} of the best tied, the fewest "
                     f"parameters won" + (", then the longer window (temporal over fast)"
                                          if prov.get("longer_window_ties") else ""))
    if prov.get("lookahead"):
        parts.append("each step's best two took the next step before one was kept (lookahead)")
    if prov.get("rungs"):
        parts.append(f"successive halving over rungs of {prov['rungs']} epochs keeping {prov['rung_keep']:.0%} "
                     f"({prov['configs_stopped_early']} configs stopped at a lower rung)")
    if prov.get("close_call_seeds"):
        seeds = prov["close_call_seeds"]
        measure = "val NLL" if prov.get("rank_by") == "nll" else "top-1"
        parts.append(f"close calls ({measure} within {prov['close_call']:g}) re-trained with {seeds} more "
                     f"seed{'s' if seeds > 1 else ''} ({prov['seed_repeats']} repeats)")
    lines = ["proxy: " + "; ".join(parts)]
    if prov.get("final_init") == Init.INHERIT:
        lines.append(f"final: trained from the inherited proxy weights of {prov['final_origin']}")
    elif prov.get("final_init"):
        lines.append(f"final: trained from {_init_text(prov['final_init'])}")
    return lines


def describe_final(final: Mapping[str, Any]) -> list[str]:
    """Which split the final number is on, in words: the held-out test split, or the one the search selected on."""
    return [f"final: {headline_text(final)}"] if headline(final)[0] is not None else []


def run_report(run_dir: str | Path, per_class: bool = False) -> dict[str, Any]:
    """Provenance and totals as dicts; path, box notes, frontier, failures and the final model's per-group (with
    ``per_class`` also per-class) results as DataFrames; the final ``Scores``; from a run directory."""
    view = RunView(run_dir)
    journal, path, final, timings = view.journal, view.path, view.final, view.timings
    final_splits = split_scores(final)
    return {"search": view.provenance(), "path": _path_table(path, journal, view.scores, timings),
            "box": _box_notes(path), "frontier": _frontier_table(view.scores, timings),
            "failures": _failures(path, journal, view.ceiling),
            "final": scores_table(final_splits, per_class), "final_scores": final_splits,
            "final_text": describe_final(final), "totals": _totals(journal, view.settings, final)}


# -- rendering ------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _pairs_frame(pairs: Mapping[str, Any]) -> pd.DataFrame:
    """A dict section (search, totals) as a two-column metric/value table."""
    return pd.DataFrame({"metric": list(pairs), "value": list(pairs.values())})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def render(report: Mapping[str, Any], fmt: str = "table") -> str:
    """The report as text: an aligned table, one CSV (a ``section`` column), Markdown or JSON.

    Table and Markdown open with the proxy mechanism in words; CSV and JSON hold it as the ``search`` section.
    """
    if fmt not in REPORT_FORMATS:
        raise UserError(f"unknown report format {fmt!r}; choose from {', '.join(REPORT_FORMATS)}")
    tables = {name: report[name] for name in _SECTIONS}
    tables["totals"] = _pairs_frame(report["totals"])
    if fmt == "json":
        out: dict[str, Any] = {"search": {k: _json_safe(v) for k, v in report["search"].items()}}
        out.update({name: [{k: _json_safe(v) for k, v in row.items()} for row in report[name].to_dict("records")]
                    for name in _SECTIONS})
        out["totals"] = {k: _json_safe(v) for k, v in report["totals"].items()}
        return json.dumps(out, indent=2)
    if fmt == "csv":
        sections = {"search": _pairs_frame(report["search"]), **tables}
        frames = [t.assign(section=name) for name, t in sections.items() if not t.empty]
        merged = pd.concat(frames, ignore_index=True)
        return merged[["section", *[c for c in merged.columns if c != "section"]]].to_csv(index=False)
    parts = describe_provenance(report["search"]) + report["final_text"]
    for name, table in tables.items():
        if fmt == "markdown":
            parts.append(f"## {name}\n\n" + (_markdown_table(table) if not table.empty else "(none)"))
        elif name == "final" and not table.empty:
            per_class = bool((table["kind"] == "class").any())
            parts.append(f"final\n{render_scores(report['final_scores'], per_class)}")
        else:
            body = table.to_string(index=False, float_format=lambda v: f"{v:.4g}") if not table.empty else "(none)"
            parts.append(f"{name}\n{body}")
    return "\n\n".join(parts) + "\n"
