"""One reader of a run directory: :class:`RunView` reads run.yaml, the journal, path.json and the final
training's metrics once, and holds the rules every reader of a run shares: a config's score is the one at its
highest rung averaged over that rung's seeds (:func:`config_scores`), the frontier, the ceiling the search used
and how its scores were obtained (:meth:`RunView.provenance`). Report, plot, compare and export read runs
through it; a run can be read while its search is still running, or years later.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .config import X3DConfig
from .errors import ConfigError
from .latency import Timing, run_latencies
from .proxy_policy import ProxyPolicy
from .rundir import RunDir, load_run, read_json_object
from .runspec import ceiling_of
from .trial import SPENT, Init, Status

__all__ = ["RunView", "ceiling_text", "frontier", "numeric_column", "config_seconds", "config_scores",
           "group_scores", "trial_groups"]

_CHOICE_RULES = ("rank_by", "fewer_params_within", "longer_window_ties")  # proxy fields that steer a choice


class RunView:
    """A run directory as its readers see it: ``settings`` (run.yaml), ``journal`` (one row per trial attempt),
    ``path`` (path.json) and ``final`` (final/metrics.json with how the final training started; {} before it
    ends)."""

    def __init__(self, run_dir: str | Path) -> None:
        run = RunDir(run_dir)
        self.dir = run.path
        self.journal = load_run(run_dir)  # refuses a folder without run.yaml
        self.settings, self.path, self.final = run.settings(), run.read_path(), _final_metrics(run)

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Every config that trained ok, scored by :func:`config_scores`."""
        return config_scores(self.journal)

    @cached_property
    def timings(self) -> dict[str, Timing]:
        """Measured latency per config key of a run searched under latency ({} for a FLOP-costed run)."""
        return run_latencies(self.dir)

    @property
    def ceiling(self) -> str | None:
        """The ceiling the search used with its unit (:func:`ceiling_text`)."""
        return ceiling_text(self.settings)

    def provenance(self) -> dict[str, Any]:
        """How the run's proxy scores were obtained (schedule, weight init, rungs, close calls) and how the
        final training started; counts are of configs (each by its first finished training)."""
        return _provenance(self.settings, self.journal, self.path, self.final, self.scores)


def ceiling_text(settings: Mapping[str, Any]) -> str | None:
    """A run's ceiling with its unit, e.g. ``4 GFLOPs`` or ``40 ms``, from its run.yaml settings (None without
    a target or ceiling)."""
    ceiling = settings.get("ceiling_gflops")
    for key, unit in (("target_ms", "ms"), ("target_gflops", "GFLOPs")):
        if settings.get(key):
            return f"{ceiling_of(float(settings[key]), float(ceiling) if ceiling else None):g} {unit}"
    return f"{float(ceiling):g} GFLOPs" if ceiling else None


def _final_metrics(run: RunDir) -> dict[str, Any]:
    """``final/metrics.json`` ({} while the final training has not finished), with how its weights started
    (``init``, ``origin_key``) from ``summary.json``."""
    path, summary = run.final_dir / "metrics.json", run.path / "summary.json"
    if not path.is_file():
        return {}
    started = (read_json_object(summary).get("final_metrics") or {}) if summary.is_file() else {}
    return {**{k: started[k] for k in ("init", "origin_key") if k in started}, **read_json_object(path)}


def frontier(points: pd.DataFrame, cost: str = "gflops", acc: str = "top1") -> pd.DataFrame:
    """Non-dominated points: each is more accurate than every point that costs as much or less."""
    ranked = points.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False], kind="stable")
    best_before = ranked[acc].cummax().shift(fill_value=-math.inf)
    return ranked[ranked[acc] > best_before].reset_index(drop=True)


def numeric_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A journal column as numbers (NaN where missing, or everywhere for journals older than the column)."""
    if column not in frame:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def config_seconds(journal: pd.DataFrame) -> pd.Series:
    """Proxy seconds spent on each config: the sum over all its records (rungs, seed repeats, attempts)."""
    return numeric_column(journal, "seconds").fillna(0.0).groupby(journal["config_key"]).sum()


def _top_rung(journal: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` records with a score at each config's highest rung (one per seed there)."""
    ok = journal[journal["status"] == Status.OK]
    ok = ok.assign(top1=numeric_column(ok, "top1"), rung=numeric_column(ok, "rung"),
                   seed_offset=numeric_column(ok, "seed_offset").fillna(0)).dropna(subset=["top1"])
    level = ok["rung"].fillna(0)
    return ok[level == level.groupby(ok["config_key"]).transform("max")]


def config_scores(journal: pd.DataFrame) -> pd.DataFrame:
    """One row per config that trained ``ok``: its record at its highest rung, with ``top1`` the mean over
    that rung's seeds, ``seeds`` their count and ``seconds`` the compute of all its records."""
    top = _top_rung(journal)
    by_config = top.groupby("config_key")["top1"]
    best = top.sort_values("seed_offset", kind="stable").drop_duplicates("config_key").sort_index()
    keys = best["config_key"]
    return best.assign(top1=keys.map(by_config.mean()), seeds=keys.map(by_config.size()),
                       seconds=keys.map(config_seconds(journal))).reset_index(drop=True)


def _val_groups(metrics: Any) -> dict[str, Any]:
    """A trial's validation top-1 per class group from its recorded metrics ({} when it has none)."""
    val = metrics.get("val") if isinstance(metrics, dict) else None
    groups = val.get("per_group") if isinstance(val, dict) else None
    return groups if isinstance(groups, dict) else {}


def trial_groups(journal: pd.DataFrame) -> pd.DataFrame:
    """Validation top-1 per class group of each journal record (same index; NaN where a record has none), one
    column per group the data declares, none without groups."""
    metrics = journal["metrics"] if "metrics" in journal else [None] * len(journal)
    groups = pd.DataFrame([_val_groups(m) for m in metrics], index=journal.index)
    return groups.apply(pd.to_numeric, errors="coerce")


def group_scores(journal: pd.DataFrame) -> pd.DataFrame:
    """Validation top-1 per class group of each config (index: config key), averaged over the records
    :func:`config_scores` averages ``top1`` over (NaN if one of them lacks it); a column per declared group."""
    top = _top_rung(journal)
    return trial_groups(top).groupby(top["config_key"]).agg(lambda column: column.mean(skipna=False))


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
                final: Mapping[str, Any], scores: pd.DataFrame) -> dict[str, Any]:
    proxy = settings.get("proxy") or {}
    ladder = list(proxy.get("rungs") or [])
    rungs = ladder if len(ladder) > 1 else []  # one rung is plain training
    spent = journal[journal["status"].isin(SPENT)]
    inits = spent.drop_duplicates("config_key").get("init", pd.Series(dtype=object)).dropna().astype(str)
    step_top = scores.groupby(["step", "kind"])["rung"].transform("max")  # a step's rungs may stretch
    repeats = (numeric_column(spent, "seed_offset").fillna(0) > 0).sum()
    try:  # a run.yaml from another version may not make a valid policy: then say nothing about epochs
        low, high = ProxyPolicy.from_dict(proxy).epoch_range() if proxy else (0, 0)
    except (ConfigError, TypeError):
        low = high = 0
    return {"proxy_schedule": proxy.get("name") or settings.get("proxy_schedule"),
            "proxy_epochs": proxy.get("epochs"), "step_compute": proxy.get("step_compute"),
            "epochs_under": proxy.get("epochs_under"),
            "epoch_range": [low, high] if high > low else None,
            "proxy_init": settings.get("proxy_init", "scratch"),  # runs before inheritance trained from scratch
            "configs_inherited": int((inits == Init.INHERIT).sum()),
            "configs_from_scratch": int((inits != Init.INHERIT).sum()),
            "scratch_fallbacks": int((inits == Init.FALLBACK).sum()),
            "rungs": ", ".join(map(str, rungs)) or None, "rung_keep": proxy.get("rung_keep") if rungs else None,
            "configs_stopped_early": int((scores["rung"] < step_top).sum()) if rungs else None,
            "close_call": proxy.get("close_call") if proxy.get("close_call_seeds") else None,
            "close_call_seeds": proxy.get("close_call_seeds") or None, "seed_repeats": int(repeats),
            **{name: proxy[name] for name in _CHOICE_RULES  # expansion's choice rules, when set; samplers
               if proxy.get(name) and not settings.get("sampler")},  # maximise top-1
            **({"lookahead": True} if (journal["kind"] == "lookahead").any() else {}),  # one taken (step takes none)
            "final_init": final.get("init"), "final_origin": _place(final.get("origin_key"), path, journal),
            "final_origin_key": final.get("origin_key")}
