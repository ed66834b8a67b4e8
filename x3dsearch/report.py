"""The report of a run: its expansion path, frontier, failures and the compute it spent.

Everything is read from the run directory (run.yaml, journal.jsonl, path.json,
final/metrics.json) through :func:`x3dsearch.rundir.load_run`, so a report can be made
while a search is still running, or years later.
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
from .rundir import RunDir, load_run
from .search import CEILING_FACTOR

__all__ = ["frontier", "run_report", "final_metrics", "render", "REPORT_FORMATS"]

REPORT_FORMATS = ("table", "csv", "markdown", "json")
_SECTIONS = ("path", "frontier", "failures")


def frontier(points: pd.DataFrame, cost: str = "gflops", acc: str = "top1") -> pd.DataFrame:
    """Non-dominated points: each is more accurate than every point that costs as much or less."""
    ranked = points.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False], kind="stable")
    best_before = ranked[acc].cummax().shift(fill_value=-math.inf)
    return ranked[ranked[acc] > best_before].reset_index(drop=True)


def final_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``final/metrics.json`` of a run ({} while the final training has not finished)."""
    path = RunDir(run_dir).final_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _shape_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    c = X3DConfig.from_dict(config)
    return {"frames x stride": f"{c.frames}x{c.stride}", "crop": c.crop, "γw": c.width, "γb": c.bottleneck,
            "γd": c.depth}


def _trial_seconds(journal: pd.DataFrame) -> dict[str, float]:
    """Wall time of the successful proxy training of each config."""
    ok = journal[journal["status"] == "ok"]
    return dict(zip(ok["config_key"], pd.to_numeric(ok["seconds"], errors="coerce")))


def _path_table(path: Mapping[str, Any], journal: pd.DataFrame) -> pd.DataFrame:
    seconds = _trial_seconds(journal)
    rows = []
    for s in path.get("steps", []):
        rows.append({"step": str(s["step"]), "axis": s["axis"], **_shape_columns(s["config"]),
                     "gflops": s["gflops"], "params": s["params"], "top1": s.get("top1"),
                     "seconds": seconds.get(s["config_key"], math.nan)})
    contraction = path.get("contraction")
    if contraction:
        outcome = (contraction.get("evaluated") or {}).get(contraction["config_key"]) or {}
        rows.append({"step": "contract", "axis": contraction["axis"], **_shape_columns(contraction["config"]),
                     "gflops": contraction["gflops"], "params": count_params(X3DConfig.from_dict(contraction["config"])),
                     "top1": outcome.get("top1"), "seconds": seconds.get(contraction["config_key"], math.nan)})
    columns = ["step", "axis", "frames x stride", "crop", "γw", "γb", "γd", "gflops", "params", "top1", "seconds"]
    return pd.DataFrame(rows, columns=columns)


def _failures(path: Mapping[str, Any], journal: pd.DataFrame, ceiling: float | None) -> pd.DataFrame:
    """Attempts that did not end ``ok`` and candidates never trained (above the ceiling)."""
    columns = ["step", "axis", "gflops", "status", "attempt", "reason"]
    bad = journal[journal["status"] != "ok"][columns]
    skipped = [{"step": s["step"], "axis": c["axis"], "gflops": c["gflops"], "status": "skipped", "attempt": 0,
                "reason": f"above the ceiling ({ceiling:g} GFLOPs), not trained" if ceiling else "not trained"}
               for s in path.get("steps", []) for c in s.get("candidates", []) if c["status"] == "skipped"]
    frames = [f for f in (bad, pd.DataFrame(skipped, columns=columns)) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _totals(journal: pd.DataFrame, settings: Mapping[str, Any], final: Mapping[str, Any]) -> dict[str, Any]:
    """Trials and compute: proxy attempts' seconds x the run's per-trial CPUs/GPUs, and the final training."""
    cpus = float(settings.get("cpus_per_trial") or 1.0)
    gpus = float(settings.get("gpus_per_trial") or 0.0)
    proxy_s = float(pd.to_numeric(journal["seconds"], errors="coerce").fillna(0.0).sum())
    final_s = float(final.get("seconds") or 0.0)
    statuses = journal["status"].value_counts().to_dict()
    return {"trials": int(journal["config_key"].nunique()), "attempts": int(len(journal)),
            "ok": int(statuses.get("ok", 0)),
            "not_ok": int(len(journal) - statuses.get("ok", 0)),
            "proxy_hours": proxy_s / 3600, "proxy_cpu_hours": proxy_s * cpus / 3600,
            "proxy_gpu_hours": proxy_s * gpus / 3600, "final_hours": final_s / 3600,
            "final_cpu_hours": final_s * cpus / 3600, "final_gpu_hours": final_s * gpus / 3600,
            "final_top1": final.get("top1"), "target_gflops": settings.get("target_gflops")}


def _frontier_table(ok: pd.DataFrame) -> pd.DataFrame:
    """The frontier of successful trials with each config's shape."""
    columns = ["step", "axis", "kind", "gflops", "params", "top1"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    front = frontier(ok)
    shapes = [_shape_columns(c) if isinstance(c, Mapping) else {} for c in front.get("config", [{}] * len(front))]
    return pd.concat([front[columns], pd.DataFrame(shapes)], axis=1)


def _ceiling(settings: Mapping[str, Any]) -> float | None:
    """The run's ceiling in GFLOPs (by default ``CEILING_FACTOR`` times the target, as the search used)."""
    if settings.get("ceiling_gflops"):
        return float(settings["ceiling_gflops"])
    return CEILING_FACTOR * float(settings["target_gflops"]) if settings.get("target_gflops") else None


def run_report(run_dir: str | Path) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """Path, frontier and failures as DataFrames and the totals as a dict, from a run directory."""
    journal = load_run(run_dir)
    run = RunDir(run_dir)
    settings, path = run.settings(), run.read_path()
    return {"path": _path_table(path, journal), "frontier": _frontier_table(journal[journal["status"] == "ok"]),
            "failures": _failures(path, journal, _ceiling(settings)),
            "totals": _totals(journal, settings, final_metrics(run_dir))}


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


def _totals_frame(totals: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"metric": list(totals), "value": list(totals.values())})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def render(report: Mapping[str, Any], fmt: str = "table") -> str:
    """The report as text: an aligned table, one CSV (a ``section`` column), Markdown or JSON."""
    if fmt not in REPORT_FORMATS:
        raise UserError(f"unknown report format {fmt!r}; choose from {', '.join(REPORT_FORMATS)}")
    tables = {name: report[name] for name in _SECTIONS}
    tables["totals"] = _totals_frame(report["totals"])
    if fmt == "json":
        out = {name: [{k: _json_safe(v) for k, v in row.items()} for row in report[name].to_dict("records")]
               for name in _SECTIONS}
        out["totals"] = {k: _json_safe(v) for k, v in report["totals"].items()}
        return json.dumps(out, indent=2)
    if fmt == "csv":
        frames = [t.assign(section=name) for name, t in tables.items() if not t.empty]
        merged = pd.concat(frames, ignore_index=True)
        return merged[["section", *[c for c in merged.columns if c != "section"]]].to_csv(index=False)
    parts = []
    for name, table in tables.items():
        if fmt == "markdown":
            parts.append(f"## {name}\n\n" + (_markdown_table(table) if not table.empty else "(none)"))
        else:
            body = table.to_string(index=False, float_format=lambda v: f"{v:.4g}") if not table.empty else "(none)"
            parts.append(f"{name}\n{body}")
    return "\n\n".join(parts) + "\n"
