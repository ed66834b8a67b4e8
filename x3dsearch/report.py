"""The report of a run: how its proxy scored, its expansion path, frontier, failures, compute, and what
the final model gets right per class group (per class on request) on val and the held-out test split.

Everything is read from the run directory (run.yaml, journal.jsonl, path.json,
final/metrics.json, summary.json) through :func:`x3dsearch.rundir.load_run`, so a report
can be made while a search is still running, or years later. A config may have several
journal records (one per rung it reached, seed repeats, retried attempts): its compute is
the sum of their seconds and its score the one at its highest rung (mean over seeds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .config import X3DConfig
from .cost import count_params
from .errors import ConfigError, UserError
from .latency import Timing, latencies, run_latencies
from .rundir import RunDir, load_run
from .schedule import Schedule
from .scores import headline, headline_text, render_scores, scores_table, split_scores
from .search import CEILING_FACTOR

__all__ = ["frontier", "numeric_column", "config_seconds", "config_scores", "provenance", "describe_provenance",
           "run_report", "final_metrics", "describe_final", "render", "REPORT_FORMATS"]

REPORT_FORMATS = ("table", "csv", "markdown", "json")
_SECTIONS = ("path", "box", "frontier", "failures", "final")
_SPENT = ("ok", "diverged", "failed")  # attempts that ran to the end (not lost workers)


def frontier(points: pd.DataFrame, cost: str = "gflops", acc: str = "top1") -> pd.DataFrame:
    """Non-dominated points: each is more accurate than every point that costs as much or less."""
    ranked = points.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False], kind="stable")
    best_before = ranked[acc].cummax().shift(fill_value=-math.inf)
    return ranked[ranked[acc] > best_before].reset_index(drop=True)


def final_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``final/metrics.json`` of a run ({} while the final training has not finished), with how its
    weights started (``init``, ``origin_key``) from ``summary.json``."""
    run = RunDir(run_dir)
    path, summary = run.final_dir / "metrics.json", run.path / "summary.json"
    if not path.is_file():
        return {}
    started = (json.loads(summary.read_text()).get("final_metrics") or {}) if summary.is_file() else {}
    return {**{k: started[k] for k in ("init", "origin_key") if k in started}, **json.loads(path.read_text())}


def numeric_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A journal column as numbers (NaN where missing, or everywhere for journals older than the column)."""
    if column not in frame:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def config_seconds(journal: pd.DataFrame) -> pd.Series:
    """Proxy seconds spent on each config: the sum over all its records (rungs, seed repeats, attempts)."""
    return numeric_column(journal, "seconds").fillna(0.0).groupby(journal["config_key"]).sum()


def config_scores(journal: pd.DataFrame) -> pd.DataFrame:
    """One row per config that trained ``ok``: its record at its highest rung, with ``top1`` the mean over
    that rung's seeds, ``seeds`` their count and ``seconds`` the compute of all its records."""
    ok = journal[journal["status"] == "ok"]
    ok = ok.assign(top1=numeric_column(ok, "top1"), rung=numeric_column(ok, "rung"),
                   seed_offset=numeric_column(ok, "seed_offset").fillna(0)).dropna(subset=["top1"])
    level = ok["rung"].fillna(0)
    top = ok[level == level.groupby(ok["config_key"]).transform("max")]
    by_config = top.groupby("config_key")["top1"]
    best = top.sort_values("seed_offset", kind="stable").drop_duplicates("config_key").sort_index()
    keys = best["config_key"]
    return best.assign(top1=keys.map(by_config.mean()), seeds=keys.map(by_config.size()),
                       seconds=keys.map(config_seconds(journal))).reset_index(drop=True)


def _shape_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    c = X3DConfig.from_dict(config)
    return {"frames x stride": f"{c.frames}x{c.stride}", "crop": c.crop, "γw": c.width, "γb": c.bottleneck,
            "γd": c.depth}


def _number(value: Any) -> float:
    """``value`` as a float; NaN for None (older path.json files lack rung and seeds)."""
    return math.nan if value is None else float(value)


def _path_rows(path: Mapping[str, Any], scores: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(config key, row) of the trained start, each step's chosen candidate and the contraction."""
    rows = [(r["config_key"], {"step": "0", "axis": "start", **_shape_columns(r["config"]), "gflops": r["gflops"],
                               "params": r["params"], "top1": r["top1"], "rung": r["rung"], "seeds": r["seeds"]})
            for _, r in scores[scores["kind"] == "start"].iterrows()]
    for s in path.get("steps", []):
        chosen = next((c for c in s.get("candidates", []) if c["config_key"] == s["config_key"]), {})
        fraction = s.get("fraction", 1.0)  # path.json files before bounded steps had full steps only
        axis = s["axis"] if fraction == 1 else f"{s['axis']}x{fraction:.2f}"
        rows.append((s["config_key"], {"step": str(s["step"]), "axis": axis, **_shape_columns(s["config"]),
                                       "gflops": s["gflops"], "params": s["params"], "top1": s.get("top1"),
                                       "rung": _number(chosen.get("rung")), "seeds": _number(chosen.get("seeds"))}))
    contraction = path.get("contraction")
    if contraction:
        outcome = (contraction.get("evaluated") or {}).get(contraction["config_key"]) or {}
        rows.append((contraction["config_key"], {
            "step": contraction.get("kind", "contract"), "axis": contraction["axis"],
            **_shape_columns(contraction["config"]),
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


def _path_table(path: Mapping[str, Any], journal: pd.DataFrame, scores: pd.DataFrame,
                timings: Mapping[str, Timing]) -> pd.DataFrame:
    """The path, one row per model, with how its score was obtained (rung, seeds, init), its compute and
    (a latency-costed run) its measured latency."""
    seconds = config_seconds(journal)
    inits = dict(zip(scores["config_key"], scores["init"])) if "init" in scores else {}
    keyed = _path_rows(path, scores)
    rows = [dict(row, init=inits.get(key) or "", seconds=seconds.get(key, math.nan)) for key, row in keyed]
    columns = ["step", "axis", "frames x stride", "crop", "γw", "γb", "γd", "gflops", "params", "top1", "rung",
               "seeds", "init", "seconds"]
    return _with_latency(pd.DataFrame(rows, columns=columns), [key for key, _ in keyed], timings)


def _failures(path: Mapping[str, Any], journal: pd.DataFrame, ceiling: str | None) -> pd.DataFrame:
    """Attempts that did not end ``ok`` and candidates never trained (above the ceiling)."""
    columns = ["step", "axis", "gflops", "status", "attempt", "rung", "reason"]
    bad = journal[journal["status"] != "ok"].reindex(columns=columns)
    skipped = [{"step": s["step"], "axis": c["axis"], "gflops": c["gflops"], "status": "skipped", "attempt": 0,
                "reason": f"above the ceiling ({ceiling}), not trained" if ceiling else "not trained"}
               for s in path.get("steps", []) for c in s.get("candidates", []) if c["status"] == "skipped"]
    frames = [f for f in (bad, pd.DataFrame(skipped, columns=columns)) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _box_notes(path: Mapping[str, Any]) -> pd.DataFrame:
    """Per step, each axis the space's box cut to a partial step, left out at its bound, or merged with another."""
    rows = [{"step": s["step"], "axis": axis, "note": note}
            for s in path.get("steps", []) for axis, note in (s.get("notes") or {}).items()]
    return pd.DataFrame(rows, columns=["step", "axis", "note"])


def _totals(journal: pd.DataFrame, settings: Mapping[str, Any], final: Mapping[str, Any]) -> dict[str, Any]:
    """Trials and compute: proxy attempts' seconds x the run's per-trial CPUs/GPUs, and the final training."""
    cpus = float(settings.get("cpus_per_trial") or 1.0)
    gpus = float(settings.get("gpus_per_trial") or 0.0)
    proxy_s = float(numeric_column(journal, "seconds").fillna(0.0).sum())
    final_s = float(final.get("seconds") or 0.0)
    statuses = journal["status"].value_counts().to_dict()
    return {"trials": int(journal["config_key"].nunique()), "attempts": int(len(journal)),
            "ok": int(statuses.get("ok", 0)),
            "not_ok": int(len(journal) - statuses.get("ok", 0)),
            "proxy_hours": proxy_s / 3600, "proxy_cpu_hours": proxy_s * cpus / 3600,
            "proxy_gpu_hours": proxy_s * gpus / 3600, "final_hours": final_s / 3600,
            "final_cpu_hours": final_s * cpus / 3600, "final_gpu_hours": final_s * gpus / 3600,
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
    shapes = [_shape_columns(c) if isinstance(c, Mapping) else {} for c in front.get("config", [{}] * len(front))]
    return pd.concat([front[columns], pd.DataFrame(shapes)], axis=1)


def _ceiling(settings: Mapping[str, Any]) -> str | None:
    """The run's ceiling with its unit, e.g. ``0.2 GFLOPs`` or ``40 ms`` (by default ``CEILING_FACTOR`` times the
    target, as the search used)."""
    if settings.get("ceiling_gflops"):
        return f"{float(settings['ceiling_gflops']):g} GFLOPs"
    for key, unit in (("target_ms", "ms"), ("target_gflops", "GFLOPs")):
        if settings.get(key):
            return f"{CEILING_FACTOR * float(settings[key]):g} {unit}"
    return None


def _place(key: str | None, path: Mapping[str, Any], journal: pd.DataFrame) -> str | None:
    """Where config ``key`` lies in the search, e.g. ``step 3 (spatial, 4x8 ...)`` or ``the start (...)``."""
    if key is None:
        return None
    for s in path.get("steps", []):
        if s["config_key"] == key:
            return f"step {s['step']} ({s['axis']}, {X3DConfig.from_dict(s['config']).short})"
    records = journal[journal["config_key"] == key]
    if records.empty:
        return key
    first = records.iloc[0]
    where = "the start" if first["kind"] == "start" else f"{first['axis']} at step {first['step']}"
    return f"{where} ({X3DConfig.from_dict(first['config']).short})"


def _provenance(settings: Mapping[str, Any], journal: pd.DataFrame, path: Mapping[str, Any],
                final: Mapping[str, Any]) -> dict[str, Any]:
    """How the run's proxy scores were obtained (schedule, weight init, rungs, close calls) and how the
    final training started; counts are of configs (each by its first finished training)."""
    proxy = settings.get("proxy") or {}
    ladder = list(proxy.get("rungs") or [])
    rungs = ladder if len(ladder) > 1 else []  # one rung is plain training
    spent = journal[journal["status"].isin(_SPENT)]
    inits = spent.drop_duplicates("config_key").get("init", pd.Series(dtype=object)).dropna().astype(str)
    scores = config_scores(journal)
    step_top = scores.groupby(["step", "kind"])["rung"].transform("max")  # a step's rungs may stretch
    repeats = (numeric_column(spent, "seed_offset").fillna(0) > 0).sum()
    try:  # a run.yaml from another version may not make a valid Schedule: then say nothing about epochs
        low, high = Schedule.from_dict(proxy).epoch_range() if proxy else (0, 0)
    except (ConfigError, TypeError):
        low = high = 0
    return {"proxy_schedule": proxy.get("name") or settings.get("proxy_schedule"),
            "proxy_epochs": proxy.get("epochs"), "step_compute": proxy.get("step_compute"),
            "epochs_under": proxy.get("epochs_under"),
            "epoch_range": [low, high] if high > low else None,
            "proxy_init": settings.get("proxy_init", "scratch"),  # runs before inheritance trained from scratch
            "configs_inherited": int((inits == "inherit").sum()),
            "configs_from_scratch": int(inits.str.startswith("scratch").sum()),
            "scratch_fallbacks": int(inits.str.startswith("scratch:").sum()),
            "rungs": ", ".join(map(str, rungs)) or None, "rung_keep": proxy.get("rung_keep") if rungs else None,
            "configs_stopped_early": int((scores["rung"] < step_top).sum()) if rungs else None,
            "close_call": proxy.get("close_call") if proxy.get("close_call_seeds") else None,
            "close_call_seeds": proxy.get("close_call_seeds") or None, "seed_repeats": int(repeats),
            "final_init": final.get("init"), "final_origin": _place(final.get("origin_key"), path, journal),
            "final_origin_key": final.get("origin_key")}


def provenance(run_dir: str | Path) -> dict[str, Any]:
    """How a run's proxy scores were obtained and its final training started (see :func:`describe_provenance`)."""
    run = RunDir(run_dir)
    return _provenance(run.settings(), load_run(run_dir), run.read_path(), final_metrics(run_dir))


def _init_text(label: str) -> str:
    """``inherit`` -> ``inherited weights``; ``scratch: why`` -> ``scratch (why)``."""
    if label == "inherit":
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
    elif prov["proxy_init"] == "inherit" and not scratch:  # a journal from before inits were recorded
        parts.append("weights inherited along the path")
    elif fallbacks:
        parts.append(f"every candidate trained from scratch ({fallbacks} as a fallback)")
    else:  # scratch mode, or nothing had a parent to inherit from (e.g. Optuna's samples)
        parts.append("every candidate trained from scratch")
    if prov.get("rungs"):
        parts.append(f"successive halving over rungs of {prov['rungs']} epochs keeping {prov['rung_keep']:.0%} "
                     f"({prov['configs_stopped_early']} configs stopped at a lower rung)")
    if prov.get("close_call_seeds"):
        seeds = prov["close_call_seeds"]
        parts.append(f"close calls (top-1 within {prov['close_call']:g}) re-trained with {seeds} more "
                     f"seed{'s' if seeds > 1 else ''} ({prov['seed_repeats']} repeats)")
    lines = ["proxy: " + "; ".join(parts)]
    if prov.get("final_init") == "inherit":
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
    journal = load_run(run_dir)
    run = RunDir(run_dir)
    settings, path, final = run.settings(), run.read_path(), final_metrics(run_dir)
    scores, final_splits, timings = config_scores(journal), split_scores(final), run_latencies(run_dir)
    return {"search": _provenance(settings, journal, path, final),
            "path": _path_table(path, journal, scores, timings),
            "box": _box_notes(path), "frontier": _frontier_table(scores, timings),
            "failures": _failures(path, journal, _ceiling(settings)),
            "final": scores_table(final_splits, per_class), "final_scores": final_splits,
            "final_text": describe_final(final), "totals": _totals(journal, settings, final)}


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
