"""Does the search pay? Found models against the presets and random search at equal cost (issue 14).

For each target (GFLOPs) and search seed, ``expand`` (progressive expansion) searches first; Optuna
TPE (``optuna``) and random search (``random``) then get the same proxy compute, the CPU-seconds
in expand's journal (each trial's seconds times ``cpus_per_trial``, or with ``--clock cpu`` its measured CPU
time, which a busy box does not inflate; rows ``+cpu-clock``). Each starts with as many proxy
trainings as expand ran and is extended (resumed with more trials) until its own journal's compute
reaches expand's; its model is then the best config at or under the target among the trials that
ended within expand's compute (its anytime curve cut there), so the overshoot of its last batch
never counts. The baseline is the costliest preset at or under the target (X3D-S at 2, X3D-M at 6),
fitted to the data's classes; with none at or under it the cheapest preset, or ``--presets``.

Every found model and preset is then trained from scratch with one full schedule
(``--full-schedule``; ``--train-schedule`` and ``--train-data`` train them longer or on a larger copy of the
benchmark than the searches saw, whose run directories stay as recorded) on ``--threads`` threads, once per
training seed (``--train-seeds``), ``--jobs`` at a time. One CSV row per model and training seed records val
top-1 (the split every search selected on), test top-1 and top-5 and the test top-1 of each class group the data
declares, cost, the search's proxy CPU-seconds, the training's clips/s, wall and CPU seconds, and the median
latency of one eval forward pass on one clip (one thread); a plot and a markdown table summarise them: per
(target, name) the mean over searches (search seeds) of each search's mean over training seeds, with its
standard error over the searches (over training seeds for a single search), and each expansion's differences with
the samplers cut at its compute paired by search seed. Re-running skips rows already in the CSV and resumes search runs from their
journals and trainings from their checkpoints; ``--report CSV...`` prints the tables of results files only
(``--baseline NAME`` pairs every search with that one, e.g. a lever with the default proxy).

With ``--pipeline`` each expansion search also gets the row a user cares about (kind ``pipeline``): expansion's
own run, its search followed by the final training as ``x3dsearch expand`` ran it until 2026-12-06 (from the
inherited proxy weights with ``cpu_full``, in the search's run directory, training seed = search seed; today's
default is ``--final-init scratch --full-schedule cpu_long_full``), against the best preset trained from
scratch for as many CPU-seconds (search plus final training, on the same clock; its epochs scaled by the
preset's CPU-seconds per epoch in its own rows, or ``--epoch-seconds``). Another start or full schedule runs that
final training in a copy of the search's folder (rows ``+final-scratch``, ``+full-SCHEDULE``): the same search,
another final training.

    .venv/bin/python experiments/search_pays.py      # many CPU-hours on 2 cores: run it in the background

A tiny end-to-end check (minutes): a 12-class ``make_synthetic(root, videos_per_class=2,
val_per_class=2, seconds=0.5, side=16)``, a one-epoch batch-2 schedule for ``--proxy-schedule`` and
``--full-schedule``, a space with a 32-px one-frame start and a ``bounds:`` box, and ``--targets`` a
few times the start's cost (no preset fits there: the cheapest, X2D, is trained), with ``--data
--space --out --results`` pointing at them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import statistics
import sys
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import os
from dataclasses import replace

import pandas as pd
import torch
import yaml

from x3dsearch.compare import CPU, WALL, clock_of, proxy_trials
from x3dsearch.config import X3DConfig, preset, preset_names
from x3dsearch.cost import count_flops, count_params
from x3dsearch.data import default_dataset, read_split
from x3dsearch.dispatch import DispatchOptions, RayDispatcher
from x3dsearch.export import select_config
from x3dsearch.model import build_model
from x3dsearch.optuna_search import run_optuna
from x3dsearch.report import _markdown_table
from x3dsearch.runview import RunView, config_scores
from x3dsearch.space import load_space
from x3dsearch.rundir import RunDir, load_run
from x3dsearch.runner import ExpandSettings, run_expand
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule
from x3dsearch.train import METRICS, TrainResult, train
from x3dsearch.trial import Init

SAMPLERS = {"optuna": "tpe", "random": "random"}  # row name -> Optuna sampler
COLUMNS = ["kind", "name", "target_gflops", "search_seed", "seed", "run", "status", "val_top1", "test_top1",
           "test_top5", "test_per_group", "gflops",
           "params", "proxy_cpu_s", "proxy_trainings", "proxy_top1", "train_clips_per_s", "train_s", "epochs",
           "stopped_early", "latency_ms", "config", "reason", "train_cpu_s"]
_KEPT = ("ok", "diverged")  # training outcomes that are results; a failed one is retried on the next run
_LATENCY_RUNS = 7
_SUMMARY_FIELDS = {"target_gflops", "kind", "name", "runs", "n", "top1", "top1_se", "seed_std", "val_top1", "gflops",
                   "gflops_std", "params", "proxy_cpu_s", "clips_per_s", "latency_ms"}


SEARCHES_FULL = "cpu_full"  # the searches' recorded full schedule, and the own runs' unless --full-schedule

@dataclass(frozen=True)
class Plan:
    """What every search and training of the experiment shares (from the command line)."""

    data: Path
    space: str
    proxy_schedule: str
    full_schedule: str
    out: Path
    threads: int
    cpus_per_trial: float
    max_concurrent: int | None
    jobs: int = 1  # full trainings run side by side, each on ``threads`` threads
    train_schedule: str | None = None  # the experiment's own trainings, if not ``full_schedule`` (the searches')
    train_data: Path | None = None  # the experiment's own trainings, if not ``data`` (the searches')
    proxy_init: str = Init.INHERIT.value  # where expansion's candidates start (the samplers' always from scratch)
    step_cost: float | None = None  # expansion's cap on one step's cost (x its base), the space's step_cost
    final_init: str = Init.INHERIT.value  # where expansion's own final training (--pipeline) starts
    epoch_s: float | None = None  # the preset's seconds per epoch for --pipeline (else its rows' median)
    clock: str = WALL  # proxy and training compute as wall seconds x CPUs, or as measured CPU time

    @property
    def label(self) -> str:
        """How the searches' rows are told apart from another proxy's: "" for the default, else ``+SCHEDULE``."""
        return "" if self.proxy_schedule == "cpu_proxy" else f"+{Path(self.proxy_schedule).stem}"

    @property
    def clock_label(self) -> str:
        """How rows whose compute was counted in measured CPU time are told apart: ``+cpu-clock``, else ""."""
        return "" if self.clock == WALL else "+cpu-clock"

    @property
    def threads_per_training(self) -> int:
        """What a full training's seconds are multiplied by to count its CPU-seconds on :attr:`clock`: its
        threads for wall seconds, 1 for measured CPU time."""
        return self.threads if self.clock == WALL else 1

    @property
    def sampler_label(self) -> str:
        """The samplers' :attr:`label`, then :attr:`clock_label` (cut at expansion's compute on that clock)."""
        return self.label + self.clock_label

    @property
    def expand_label(self) -> str:
        """Expansion's :attr:`label`, then ``+scratch`` when its candidates start from scratch and ``+step2x``
        when its steps are capped at twice their base's cost (``--step-cost 2``)."""
        return (self.label + ("" if self.proxy_init == Init.INHERIT.value else f"+{self.proxy_init}")
                + ("" if self.step_cost is None else f"+step{self.step_cost:g}x"))

    @property
    def pipeline_label(self) -> str:
        """How the own-run rows of another final training are told apart: ``+final-scratch`` from scratch,
        ``+full-SCHEDULE`` with a full schedule other than ``cpu_full``, else ""."""
        return (("" if self.final_init == Init.INHERIT.value else f"+final-{self.final_init}")
                + ("" if self.full_schedule == SEARCHES_FULL else f"+full-{Path(self.full_schedule).stem}"))

    def expand_space(self) -> str:
        """Expansion's search space: :attr:`space`, or with ``step_cost`` a copy of it that sets the cap,
        written beside the runs (the samplers keep :attr:`space`; the cap only changes expansion's steps)."""
        if self.step_cost is None:
            return self.space
        space = replace(load_space(self.space), step_cost=self.step_cost)
        path = self.out / f"space-{space.name}-step{self.step_cost:g}x.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
        return str(path)

    @property
    def full(self) -> ProxyPolicy:
        """The schedule of the experiment's own full trainings (presets and found models)."""
        return load_schedule(self.train_schedule or self.full_schedule)

    def settings(self, run: str, target: float, seed: int) -> ExpandSettings:
        """Expansion's search settings of the run directory ``OUT/run``: proxy trainings only, no final training."""
        return ExpandSettings(target_gflops=target, out=str(self.out / run), space=self.expand_space(), data=str(self.data),
                              proxy_schedule=self.proxy_schedule, full_schedule=self.full_schedule, seed=seed,
                              proxy_init=self.proxy_init, final_init=self.final_init,
                              final_training=False, cpus_per_trial=self.cpus_per_trial,
                              max_concurrent=self.max_concurrent)


@dataclass(frozen=True)
class Found:
    """A search's model, its proxy top-1, and the proxy compute and trainings it was found with."""

    config: X3DConfig
    proxy_top1: float
    proxy_cpu_s: float
    trainings: int


def run_name(name: str, target: float, seed: int | None = None) -> str:
    """The folder and CSV key of a search (``expand-2g-seed0``) or a preset baseline (``preset-S-2g``)."""
    return f"{name}-{target:g}g-seed{seed}" if seed is not None else f"preset-{name}-{target:g}g"


def run_trials(run_dir: str | Path, clock: str) -> pd.DataFrame:
    """A run's finished proxy trainings in the order they ended, each with its CPU-seconds (``compute``) on
    ``clock``; a journal that did not measure CPU time cannot be read on the CPU clock."""
    journal, settings = load_run(run_dir), RunDir(run_dir).settings()
    if clock == CPU and clock_of([journal], [settings]) != CPU:
        sys.exit(f"{run_dir}: its proxy trainings did not all measure their CPU time (journals before 2026-12-06, "
                 "or GPU trials): use --clock wall, or another --out and --results for new searches")
    return proxy_trials(journal, float(settings.get("cpus_per_trial") or 1.0), clock)


def best_within(trials: pd.DataFrame, budget: float, target: float) -> pd.Series | None:
    """The best config at or under ``target`` among the trials that ended within ``budget`` CPU-seconds.

    Each config counts with its score at the highest rung reached by then, as on the anytime curve.
    """
    scores = config_scores(trials[trials["cumulative"] <= budget * (1 + 1e-9)])
    scores = scores[scores["gflops"] <= target]
    return scores.sort_values(["top1", "gflops"], ascending=[False, True]).iloc[0] if len(scores) else None


def expand_found(run_dir: Path, clock: str) -> Found:
    """Expand's final model (after contraction) and all the proxy compute of its run on ``clock``."""
    trials = run_trials(run_dir, clock)
    config = select_config(run_dir)
    scores = config_scores(trials).set_index("config_key")["top1"]
    return Found(config, float(scores.get(config.key, math.nan)), float(trials["compute"].sum()), len(trials))


def search_sampled(plan: Plan, name: str, target: float, seed: int, budget: Found) -> Found | None:
    """Optuna (TPE or random) extended until its compute reaches ``budget``'s, then cut there.

    None when no trial under the target succeeded within the budget.
    """
    settings = plan.settings(run_name(name + plan.sampler_label, target, seed), target, seed)
    wanted, spent_before = budget.trainings, -1.0
    while True:
        summary = run_optuna(settings, wanted, sampler=SAMPLERS[name], resume=RunDir(settings.out).exists(),
                             quiet=True)
        trials = run_trials(settings.out, plan.clock)
        spent = float(trials["compute"].sum())
        if spent >= budget.proxy_cpu_s or spent <= spent_before:
            break
        wanted = summary["trials"] + math.ceil((budget.proxy_cpu_s - spent) * summary["trials"] / spent)
        spent_before = spent
        print(f"  {name}: {spent:.0f} of {budget.proxy_cpu_s:.0f} CPU-s after {summary['trials']} trainings; "
              f"extending to {wanted}", flush=True)
    best = best_within(trials, budget.proxy_cpu_s, target)
    if best is None:
        return None
    within = trials[trials["cumulative"] <= budget.proxy_cpu_s * (1 + 1e-9)]
    return Found(X3DConfig.from_dict(best["config"]), float(best["top1"]), float(within["compute"].sum()),
                 len(within))


def baseline_presets(target: float, classes: int, names: Iterable[str] | None) -> list[tuple[str, X3DConfig]]:
    """The presets to train at ``target`` with ``classes`` outputs: ``names`` (an empty list: none), else the
    costliest at or under the target, else (none fits) the cheapest."""
    fitted = {name: preset(name, num_classes=classes) for name in (preset_names() if names is None else names)}
    if names is not None:
        return list(fitted.items())
    cost = {name: count_flops(config) for name, config in fitted.items()}
    under = [name for name in fitted if cost[name] <= target * 1e9]
    pick = max(under, key=cost.__getitem__) if under else min(fitted, key=cost.__getitem__)
    if not under:
        print(f"  no preset at or under {target:g} GFLOPs; training the cheapest, {pick} "
              f"({cost[pick] / 1e9:.3g} GFLOPs)", flush=True)
    return [(pick, fitted[pick])]


def train_once(plan: Plan, config: X3DConfig, seed: int, epochs: int | None = None) -> TrainResult:
    """Full training of ``config`` with ``seed`` (and ``epochs`` instead of the schedule's, its time guard scaled
    alike) in ``OUT/train``; a finished one is read back, an interrupted one resumes from its checkpoint (one
    folder per config, schedule and seed)."""
    full = plan.full
    if epochs is not None:  # the runaway guard scales with the length, so a longer training ends by its epochs
        budget = full.recipe.time_budget_s
        full = replace(full, recipe=replace(full.recipe, epochs=epochs, time_budget_s=budget and
                                            budget * max(1.0, epochs / full.recipe.epochs)))
    recorded = dict(full.to_dict(), debug_nan_step=None)  # the mapping as hashed before the recipe/policy split
    data = plan.train_data or plan.data
    if plan.train_data not in (None, plan.data):  # (trainings on the searches' data keep the folders they had)
        recorded["data"] = str(data)
    digest = hashlib.sha1((config.key + json.dumps(recorded, sort_keys=True)).encode()).hexdigest()[:12]
    out = plan.out / "train" / f"{digest}-seed{seed}"
    if (out / METRICS).is_file():
        result = TrainResult.from_dict(json.loads((out / METRICS).read_text()))
        if result.status in _KEPT:
            return result
    return train(config, str(data), full.recipe, seed=seed, threads=plan.threads, out_dir=out, resume=True,
                 test_split=True)


def own_final(plan: Plan, run_dir: Path, target: float, seed: int) -> TrainResult:
    """Expansion's own final training: the search in ``run_dir`` resumed with its final training, which starts
    where ``plan.final_init`` says as ``x3dsearch expand --final-init`` does (on ``plan.threads`` threads)."""
    os.environ["OMP_NUM_THREADS"] = str(plan.threads)  # the final training's threads, read by resolve_threads
    view = RunView(run_dir)
    if not view.final:
        run_expand(replace(plan.settings(run_dir.name, target, seed), final_training=True), resume=True, quiet=True)
        view = RunView(run_dir)
    asked = plan.final_init if plan.proxy_init == Init.INHERIT.value else Init.SCRATCH.value  # weights to inherit?
    started = str(view.final.get("init"))
    if started != asked:  # e.g. "scratch: parent weights missing" where inherit was asked for
        raise RuntimeError(f"{run_dir}: the final training started from {started}, not {asked}")
    return TrainResult.from_dict({k: v for k, v in view.final.items() if k not in ("init", "origin_key")})


@lru_cache(maxsize=None)
def latency_ms(config: X3DConfig, schedule: Recipe) -> float:
    """Median milliseconds of one eval forward pass of ``build_model(config)`` on one clip at the
    schedule's training input size, one thread, in the schedule's memory layout."""
    side = schedule.train_crop(config)
    model, clip = build_model(config).eval(), torch.randn(1, 3, config.frames, side, side)
    if schedule.channels_last:
        model, clip = model.to(memory_format=torch.channels_last_3d), clip.to(memory_format=torch.channels_last_3d)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            model(clip)  # warm-up
            times = []
            for _ in range(_LATENCY_RUNS):
                start = time.perf_counter()
                model(clip)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1e3


def completed(results: Path) -> set[tuple[str, int]]:
    """(run, training seed) of the CSV's rows that hold a result."""
    if not results.is_file():
        return set()
    table = pd.read_csv(results)
    kept = table[table["status"].isin(_KEPT)]
    return set(zip(kept["run"], kept["seed"].astype(int)))


@dataclass(frozen=True)
class TrainJob:
    """One full training of the experiment and the CSV row it fills (``row`` plus the outcome)."""

    config: X3DConfig
    seed: int
    row: dict[str, Any]
    epochs: int | None = None  # instead of the full schedule's
    run_dir: Path | None = None  # expansion's own final training in this search's run directory instead


def _train_job(plan: Plan, job: TrainJob) -> dict[str, Any]:
    """Train one job (in a worker process) and return its CSV row."""
    result = (train_once(plan, job.config, job.seed, job.epochs) if job.run_dir is None
              else own_final(plan, job.run_dir, job.row["target_gflops"], job.seed))
    test = result.test.to_dict() if result.test is not None else {}
    return dict(job.row, seed=job.seed, status=result.status, val_top1=result.top1, test_top1=test.get("top1"),
                test_top5=test.get("top5"), test_per_group=json.dumps(test.get("per_group", {}), sort_keys=True),
                gflops=count_flops(job.config) / 1e9, params=count_params(job.config),
                train_clips_per_s=result.clips_per_s, train_s=result.seconds, epochs=len(result.epoch_losses),
                stopped_early=result.stopped_early, latency_ms=latency_ms(job.config, plan.full.recipe),
                config=job.config.to_json(), reason=result.reason,
                train_cpu_s=result.cpu_seconds or math.nan)  # 0: read back from before CPU time was recorded


def train_all(plan: Plan, results: Path, jobs: list[TrainJob]) -> None:
    """Run ``jobs`` on ``plan.jobs`` processes and append each row to ``results`` as it ends."""
    if not jobs:
        return
    _add_new_columns(results)
    context = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(plan.jobs, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_train_job, plan, job) for job in jobs]
        for future in as_completed(futures):
            record = future.result()
            columns = list(pd.read_csv(results, nrows=0).columns) if results.is_file() else COLUMNS
            pd.DataFrame([record], columns=columns).to_csv(results, mode="a", header=not results.is_file(),
                                                           index=False)
            top1 = (f"val {record['val_top1']:.3f} test {record['test_top1']:.3f}" if record["test_top1"] is not None
                    else record["reason"] or f"val {record['val_top1']}")
            print(f"  trained {record['run']} seed {record['seed']}: {record['status']}, top-1 {top1}, "
                  f"{record['train_s']:.0f} s, {record['train_clips_per_s']:.1f} clips/s", flush=True)


def _add_new_columns(results: Path) -> None:
    """Give a results file written before a column of :data:`COLUMNS` existed that column, empty, at the end (its
    values kept as written), so that the rows appended next line up with its header. Not while another run of
    this script appends to the file: a row it wrote during the rewrite would be lost."""
    if not results.is_file():
        return
    table = pd.read_csv(results, dtype=str, keep_default_na=False)
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        table.assign(**dict.fromkeys(missing, "")).to_csv(results.with_suffix(".tmp"), index=False)
        results.with_suffix(".tmp").replace(results)


def jobs_for(config: X3DConfig, seeds: Iterable[int], done: set[tuple[str, int]], **row: Any) -> list[TrainJob]:
    """One job per training seed of ``config`` whose row is not yet ``done``."""
    return [TrainJob(config, seed, row) for seed in seeds if (row["run"], seed) not in done]


def pipeline_jobs(plan: Plan, results: Path, target: float, seed: int, budget: Found,
                  baseline: tuple[str, X3DConfig]) -> list[TrainJob]:
    """Expansion's own run (search, then its final training) and, once that has ended, the baseline preset from
    scratch for the same CPU-seconds: each job whose row is not in ``results`` yet."""
    done, table = completed(results), pd.read_csv(results) if results.is_file() else pd.DataFrame(columns=COLUMNS)
    name, config = baseline
    search_dir = plan.out / run_name("expand" + plan.expand_label, target, seed)
    own = run_name("pipeline-expand" + plan.expand_label + plan.pipeline_label, target, seed)
    row = dict(kind="pipeline", target_gflops=target, search_seed=seed, proxy_cpu_s=budget.proxy_cpu_s,
               proxy_trainings=budget.trainings, proxy_top1=budget.proxy_top1)
    if (own, seed) not in done:
        return [TrainJob(budget.config, seed, dict(row, name="expand" + plan.expand_label + plan.pipeline_label,
                                                   run=own), run_dir=_own_run_dir(plan, search_dir))]
    total = budget.proxy_cpu_s + _training_cpu_s(table[(table["run"] == own) & (table["seed"] == seed)].iloc[-1:],
                                                 plan).iloc[0]
    if math.isnan(total):
        sys.exit(f"{own}: its row did not measure its training's CPU time (written before 2026-12-06): use --clock "
                 "wall for it")
    runs = table[(table["kind"] == "preset") & (table["name"] == name) & table["status"].isin(_KEPT)]
    per_epoch = (plan.epoch_s * plan.threads_per_training if plan.epoch_s
                 else float((_training_cpu_s(runs, plan) / runs["epochs"]).median()))
    if math.isnan(per_epoch):
        sys.exit(f"no row of {name} {'has its CPU time measured ' * (plan.clock == CPU)}to take its seconds per "
                 "epoch from: pass --epoch-seconds, or train it first (--presets)")
    epochs = max(1, round(total / per_epoch))
    # the own run's label, so each is compared with its own preset rows; +rateNs where the rate was given
    label = (plan.expand_label + plan.pipeline_label + plan.clock_label
             + ("" if plan.epoch_s is None else f"+rate{plan.epoch_s:g}s"))
    same = run_name(f"pipeline-{name}" + label, target, seed)
    if (same, seed) in done:
        kept = table[(table["run"] == same) & (table["seed"] == seed) & table["status"].isin(_KEPT)]
        _check_share(kept.iloc[-1:], total, plan)
        return []
    return [TrainJob(config, seed, dict(row, name=f"{name} same CPU-s" + label, run=same, proxy_cpu_s=0.0,
                                        proxy_trainings=0, proxy_top1=None), epochs=epochs)]


def _training_cpu_s(rows: pd.DataFrame, plan: Plan) -> pd.Series:
    """The CPU-seconds of the rows' trainings on the plan's clock: wall seconds times threads, or measured (NaN
    where a row did not measure it)."""
    if plan.clock == WALL:
        return rows["train_s"].astype(float) * plan.threads
    return rows["train_cpu_s"].astype(float) if "train_cpu_s" in rows else pd.Series(math.nan, index=rows.index)


def _check_share(preset_row: pd.DataFrame, total: float, plan: Plan) -> None:
    """Warn when the preset's same-CPU-s row (one) used other than 90-110% of the own run's CPU-seconds on the
    plan's clock: its rate came from rows trained under another load (results.md, item 8b)."""
    used, row = float(_training_cpu_s(preset_row, plan).iloc[0]), preset_row.iloc[0]
    if not 0.9 <= used / total <= 1.1:
        print(f"  warning: {row['run']} used {used:.0f} CPU-s, {100 * used / total:.0f}% of the own run's "
              f"{total:.0f}; it trained at {used / row['epochs'] / plan.threads_per_training:.1f} s an epoch: pass "
              "that as --epoch-seconds for an even comparison", flush=True)


def _own_run_dir(plan: Plan, search_dir: Path) -> Path:
    """Where expansion's own final training runs: the search's folder, or for another final training (another
    start or schedule) a copy of it without ``final/`` (``--resume`` replays its journal), so every final training
    follows the same search. The proxy weights are copied unless the final training starts from scratch."""
    if not plan.pipeline_label:
        return search_dir
    own = search_dir.with_name(search_dir.name + plan.pipeline_label)
    if not own.exists():
        left_out = ["final", "trials", "ray"] + (["weights"] if plan.final_init != Init.INHERIT.value else [])
        part = own.with_name(own.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(search_dir, part, ignore=lambda folder, names: left_out if Path(folder) == search_dir else [])
        part.rename(own)
    return own


def _groups(table: pd.DataFrame) -> list[str]:
    """The class groups the rows' test scores declare, in their order."""
    names: list[str] = []
    for text in table["test_per_group"].dropna():
        names += [g for g in json.loads(text) if g not in names]
    return names


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Test top-1 (and per group) per (target, kind, name): the mean over runs of each run's mean over its
    training seeds, with the standard error over runs (search seeds), or over training seeds for one run."""
    ok = table[table["status"] == "ok"].copy()
    groups = _groups(ok)
    for group in groups:
        ok[group] = [json.loads(t).get(group, math.nan) if isinstance(t, str) else math.nan
                     for t in ok["test_per_group"]]
    metrics = ["test_top1", *groups]
    rows = []
    for (target, kind, name), part in ok.groupby(["target_gflops", "kind", "name"], sort=True):
        runs = part.groupby("run")[metrics].mean()
        spread = runs if len(runs) > 1 else part[metrics]
        row = {"target_gflops": target, "kind": kind, "name": name, "runs": len(runs), "n": len(part),
               "top1": runs["test_top1"].mean(), "top1_se": spread["test_top1"].std() / math.sqrt(len(spread)),
               "seed_std": part["test_top1"].std(), "val_top1": part["val_top1"].mean(),
               "gflops": part["gflops"].mean(), "gflops_std": part.groupby("run")["gflops"].first().std(),
               "params": part["params"].mean(), "proxy_cpu_s": part["proxy_cpu_s"].mean(),
               "clips_per_s": part["train_clips_per_s"].mean(), "latency_ms": part["latency_ms"].mean()}
        rows.append(row | {g: runs[g].mean() for g in groups})
    return pd.DataFrame(rows)


def differences(summary: pd.DataFrame) -> pd.DataFrame:
    """Per target and expansion variant: its mean test top-1 minus the best preset's, random's and optuna's,
    with the standard error of each difference (NaN where a side has a single row)."""
    rows = []
    for target, group in summary.groupby("target_gflops"):
        presets = group[group["kind"] == "preset"]
        others = [(f"best preset ({row['name']})", row) for _, row in presets.nlargest(1, "top1").iterrows()]
        searches = group[group["kind"] == "search"]
        for _, e in searches[searches["name"].str.startswith("expand")].iterrows():
            samplers = searches[searches["name"].isin(_own_samplers(e["name"], searches["name"]))]
            pairs = others + [(row["name"], row) for _, row in samplers.iterrows()]
            rows += [_difference(target, e["name"], e, label, other) for label, other in pairs]
        pipeline = group[group["kind"] == "pipeline"]  # expansion's own run against the preset for its CPU-seconds
        for _, e in pipeline[pipeline["name"].str.startswith("expand")].iterrows():
            own_label = re.escape(e["name"][len("expand"):])  # its preset rows, at either rate
            same = pipeline["name"].str.contains(rf" same CPU-s{own_label}(?:\+cpu-clock)?(?:\+rate[0-9.]+s)?$")
            rows += [_difference(target, f"{e['name']}, its own run", e, row["name"], row)
                     for _, row in pipeline[same].iterrows()]
    return pd.DataFrame(rows, columns=["target_gflops", "expansion", "minus", "top1_diff", "std_error"])


def _own_samplers(expansion: str, names: Iterable[str]) -> list[str]:
    """The sampler rows of ``names`` cut at ``expansion``'s compute: those of its proxy schedule ("" or "+SCHEDULE",
    without expansion's own "+scratch" and "+stepNx"), on either clock."""
    label = re.sub(rf"(\+{Init.SCRATCH.value})?(\+step[0-9.]+x)?$", "", expansion[len("expand"):])
    wanted = {s + label + clock for s in SAMPLERS for clock in ("", "+cpu-clock")}
    return [name for name in names if name in wanted]


def paired(table: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Differences paired by search seed, per target: every search minus ``baseline``, or (none given) each
    expansion minus the samplers cut at its compute. Per shared search seed the difference of the runs' mean test
    top-1; a seed counts only where both runs have an ok test score for every training seed the target's searches
    used (``excluded`` counts the shared seeds that do not); the mean with its standard error (std over the square
    root of the count), where two or more seeds count. Pairing removes the spread both sides share."""
    searches = table[table["kind"] == "search"]
    rows = []
    for target, group in searches.groupby("target_gflops"):
        wanted = frozenset(group["seed"].dropna())
        good = group[(group["status"] == "ok") & group["test_top1"].notna()]
        means, complete = {}, {}
        for name, part in good.groupby("name"):
            runs = part.groupby("search_seed")
            means[name] = runs["test_top1"].mean()
            complete[name] = {k for k, seeds in runs["seed"] if frozenset(seeds) == wanted}
        present = {name: set(part["search_seed"].dropna()) for name, part in group.groupby("name")}
        names = sorted(present)
        pairs = ([(e, s) for e in names if e.startswith("expand") for s in _own_samplers(e, names)] if baseline is None
                 else [(name, baseline) for name in names if name != baseline and baseline in present])
        for a, b in pairs:
            seeds = sorted(complete.get(a, set()) & complete.get(b, set()))
            if len(seeds) < 2:
                continue
            diff = means[a][seeds] - means[b][seeds]
            rows.append({"target_gflops": target, "search": a, "minus": b, "search_seeds": len(seeds),
                         "excluded": len(present[a] & present[b]) - len(seeds), "top1_diff": diff.mean(),
                         "std_error": diff.std() / math.sqrt(len(seeds))})
    return pd.DataFrame(rows, columns=["target_gflops", "search", "minus", "search_seeds", "excluded", "top1_diff",
                                       "std_error"])


_OWN_COLUMNS = ["target_gflops", "own_run", "search", "search_seed", "seed", "own_top1", "scratch_top1", "top1_diff",
                "own_s", "scratch_s"]


def own_against_scratch(table: pd.DataFrame) -> pd.DataFrame:
    """Expansion's own runs (``pipeline`` rows) against the same found model trained from scratch with the experiment's
    full schedule and the same training seed (the ``search`` row of the own run's search): one row per own run with
    an ok test score; the scratch side is NaN where that training has no ok score yet."""
    ok = table[(table["status"] == "ok") & table["test_top1"].notna()]
    own = ok[(ok["kind"] == "pipeline") & ok["name"].str.startswith("expand")]
    if own.empty:
        return pd.DataFrame(columns=_OWN_COLUMNS)
    scratch = ok[ok["kind"] == "search"].set_index(["name", "target_gflops", "search_seed", "seed"])
    rows = []
    for _, o in own.iterrows():
        search = re.sub(r"(\+final-[^+]+)?(\+full-[^+]+)?$", "", o["name"])  # the own run's search: no pipeline label
        key = (search, o["target_gflops"], o["search_seed"], o["seed"])
        s = scratch.loc[key] if key in scratch.index else None
        if s is not None and isinstance(s, pd.DataFrame):
            s = s.iloc[-1]
        if s is not None and s["config"] != o["config"]:
            sys.exit(f"{o['run']}: its model is not the one its search {search} trained (seed {o['seed']})")
        rows.append({"target_gflops": o["target_gflops"], "own_run": o["name"], "search": search,
                     "search_seed": o["search_seed"], "seed": o["seed"], "own_top1": o["test_top1"],
                     "scratch_top1": math.nan if s is None else s["test_top1"], "own_s": o["train_s"],
                     "scratch_s": math.nan if s is None else s["train_s"]})
    pairs = pd.DataFrame(rows, columns=_OWN_COLUMNS)
    pairs["top1_diff"] = pairs["own_top1"] - pairs["scratch_top1"]
    return pairs


def _difference(target: float, expansion: str, e: pd.Series, label: str, other: pd.Series) -> dict[str, Any]:
    return {"target_gflops": target, "expansion": expansion, "minus": label, "top1_diff": e["top1"] - other["top1"],
            "std_error": math.sqrt(e["top1_se"] ** 2 + other["top1_se"] ** 2)}


def markdown(summary: pd.DataFrame, diffs: pd.DataFrame, pairs: pd.DataFrame | None = None,
             own: pd.DataFrame | None = None) -> str:
    """The tables of the report: test results per (target, name), each expansion's differences, then (if any) its
    differences paired by search seed and its own runs against the same models from scratch."""
    groups = [c for c in summary.columns if c not in _SUMMARY_FIELDS]
    results = pd.DataFrame({
        "target GFLOPs": summary["target_gflops"].map("{:g}".format), "kind": summary["kind"],
        "name": summary["name"], "searches": summary["runs"], "models trained": summary["n"],
        "test top-1 (mean ± s.e.)": [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["top1"], summary["top1_se"])],
        **{f"test {g}": summary[g].map("{:.3f}".format) for g in groups},
        "training-seed std": [f"{v:.3f}" if kind != "pipeline" else "—"  # one training per search seed there
                              for kind, v in zip(summary["kind"], summary["seed_std"])],
        "val top-1": summary["val_top1"].map("{:.3f}".format),
        "GFLOPs": summary["gflops"].map("{:.3g}".format), "params (M)": (summary["params"] / 1e6).map("{:.2f}".format),
        "proxy CPU-s": summary["proxy_cpu_s"].map("{:.0f}".format),
        "train clips/s": summary["clips_per_s"].map("{:.1f}".format),
        "latency ms/clip": summary["latency_ms"].map("{:.2f}".format)})
    diff = pd.DataFrame({"target GFLOPs": diffs["target_gflops"].map("{:g}".format),
                         "expansion": diffs["expansion"], "minus": diffs["minus"],
                         "test top-1 difference (± s.e.)": [f"{d:+.3f} ± {e:.3f}"
                                                           for d, e in zip(diffs["top1_diff"], diffs["std_error"])]})
    text = f"## Test top-1 after the same full training\n\n{_markdown_table(results)}\n"
    if not diffs.empty:
        text += f"\n## Expansion against the others (difference of mean test top-1)\n\n{_markdown_table(diff)}\n"
    if pairs is not None and not pairs.empty:
        text += _paired_markdown(pairs)
    if own is not None and not own.empty:
        text += _own_markdown(own)
    return text


def _paired_markdown(pairs: pd.DataFrame) -> str:
    pair = pd.DataFrame({"target GFLOPs": pairs["target_gflops"].map("{:g}".format), "search": pairs["search"],
                         "minus": pairs["minus"], "search seeds": pairs["search_seeds"],
                         "seeds left out (incomplete)": pairs["excluded"],
                         "paired difference (± s.e.)": [f"{d:+.3f} ± {e:.3f}"
                                                        for d, e in zip(pairs["top1_diff"], pairs["std_error"])]})
    return f"\n## Paired by search seed (seeds with every training ok on both sides)\n\n{_markdown_table(pair)}\n"


def _own_markdown(own: pd.DataFrame) -> str:
    rows = pd.DataFrame({"target GFLOPs": own["target_gflops"].map("{:g}".format), "own run": own["own_run"],
                         "search seed": own["search_seed"].astype(int), "training seed": own["seed"].astype(int),
                         "own test top-1": own["own_top1"].map("{:.3f}".format),
                         "from scratch": own["scratch_top1"].map(lambda v: "not trained yet" if math.isnan(v)
                                                                 else f"{v:.3f}"),
                         "difference": own["top1_diff"].map(lambda v: "—" if math.isnan(v) else f"{v:+.3f}"),
                         "own s / scratch s": [f"{a:.0f} / {'—' if math.isnan(b) else f'{b:.0f}'}"
                                               for a, b in zip(own["own_s"], own["scratch_s"])]})
    means = own.groupby(["target_gflops", "own_run"])["top1_diff"].agg(["mean", "std", "count"]).reset_index()
    summary = pd.DataFrame({"target GFLOPs": means["target_gflops"].map("{:g}".format), "own run": means["own_run"],
                            "pairs (both sides ok)": means["count"],
                            "own − scratch (mean ± s.e.)": [f"{m:+.3f} ± {sd / math.sqrt(n):.3f}" if n > 1
                                                           else ("—" if n == 0 else f"{m:+.3f}")
                                                           for m, sd, n in zip(means["mean"], means["std"],
                                                                               means["count"])]})
    return ("\n## Own run against the same model from scratch (same training seed)\n\n"
            f"{_markdown_table(rows)}\n\n{_markdown_table(summary)}\n")


def _zero_nan(value: float) -> float:
    """An error bar's half-width: 0 where the std is undefined (a single row)."""
    return 0.0 if math.isnan(value) else value


def plot(summary: pd.DataFrame, targets: Iterable[float], out: Path) -> Path:
    """Top-1 against GFLOPs, mean ± std per (kind, name, target), the targets dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours: dict[str, Any] = {}
    for _, row in summary.iterrows():
        name = f"{row['name']} (own run, inherited weights)" if row["kind"] == "pipeline" and \
            row["name"].startswith("expand") else row["name"]
        bar = ax.errorbar(row["gflops"], row["top1"], xerr=_zero_nan(row["gflops_std"]),
                          yerr=_zero_nan(row["top1_se"]), capsize=3,
                          marker={"preset": "s", "pipeline": "D"}.get(row["kind"], "o"), linestyle="none",
                          label=name if name not in colours else None, color=colours.get(name))
        colours.setdefault(name, bar.lines[0].get_color())
    for target in targets:
        ax.axvline(target, color="grey", linestyle=":")
    ax.set(xscale="log", xlabel="GFLOPs", ylabel="test top-1 (full schedule, from scratch unless said)",
           title="found models and presets, mean ± standard error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[2.0, 6.0], help="GFLOPs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of each model")
    parser.add_argument("--presets", nargs="*", help="presets to train at every target (default: the costliest "
                                                     "at or under it, else the cheapest; none if given no names)")
    parser.add_argument("--proxy-schedule", default="cpu_proxy",
                        help="expansion's proxy (default: cpu_proxy, the toolkit's default before 2026-12-05, whose "
                             "rows are named plain expand; another schedule names its rows expand+NAME)")
    parser.add_argument("--proxy-init", choices=[Init.INHERIT.value, Init.SCRATCH.value], default=Init.INHERIT.value,
                        help="where expansion's candidates start (scratch: rows named expand+scratch)")
    parser.add_argument("--step-cost", type=float, metavar="X",
                        help="cap each of expansion's steps at X times its base's cost, e.g. 2 (the space's "
                             "step_cost; rows named expand+step2x); the samplers are unchanged")
    parser.add_argument("--full-schedule", default=SEARCHES_FULL)
    parser.add_argument("--data", type=Path, help="dataset folder (default: the synthetic benchmark)")
    parser.add_argument("--train-schedule", help="schedule of the trainings of presets and found models (default: "
                                                 "--full-schedule, which the searches record)")
    parser.add_argument("--train-data", type=Path, help="dataset of those trainings (default: --data, the searches'), "
                                                        "e.g. a larger copy of the same benchmark")
    parser.add_argument("--space", default="x3d_kinetics")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each full training")
    parser.add_argument("--jobs", type=int, default=2, help="full trainings run side by side")
    parser.add_argument("--strategies", nargs="+", default=["expand", *SAMPLERS], choices=["expand", *SAMPLERS],
                        help="the searches to run (expand always runs: it sets the others' compute)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--max-concurrent", type=int)
    parser.add_argument("--pipeline", action="store_true",
                        help="also expansion's own run (search, then its final training: from the inherited weights "
                             "unless --final-init scratch) against the best preset from scratch for the same "
                             "CPU-seconds, per search seed")
    parser.add_argument("--epoch-seconds", type=float, metavar="S",
                        help="with --pipeline: the preset's seconds per epoch as --clock counts them, wall "
                             "seconds at --threads threads or measured CPU-seconds (default: the median of its "
                             "preset rows, which may have trained under another load); rows named +rateSs")
    parser.add_argument("--clock", choices=(WALL, CPU), default=WALL,
                        help="how compute is counted for the samplers' cut and --pipeline's preset: wall seconds x "
                             "CPUs per trial or threads, or measured CPU time, which a busy box does not inflate "
                             "(searches recorded from 2026-12-06 on; rows named +cpu-clock)")
    parser.add_argument("--final-init", choices=(Init.INHERIT, Init.SCRATCH), default=Init.INHERIT.value,
                        help="where the own run's final training starts (--pipeline): scratch runs it in a copy "
                             "of each search's folder, rows named +final-scratch (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/search_pays"), help="runs folder")
    parser.add_argument("--results", type=Path, default=Path("experiments/results/search_pays.csv"))
    parser.add_argument("--report", type=Path, nargs="+", metavar="CSV",
                        help="print the tables of these results files taken together (e.g. two lanes' files), "
                             "with the differences paired by search seed; runs nothing")
    parser.add_argument("--baseline", metavar="NAME",
                        help="with --report: pair every search with this one (e.g. expand+cpu_proxy_lean), not each "
                             "expansion with its samplers")
    return parser


def run_target(plan: Plan, args: argparse.Namespace, target: float, classes: int, ray: RayDispatcher) -> None:
    """Every preset baseline and search of one target, each model trained on every training seed.

    The trainings of each search seed start once its searches have ended, so its rows land as they come; with
    ``--pipeline`` the own runs of every seed then train side by side (``--jobs``), then their presets.
    """
    done = completed(args.results)
    train_all(plan, args.results, [job for name, config in baseline_presets(target, classes, args.presets)
                                   for job in jobs_for(config, args.train_seeds, done, kind="preset", name=name,
                                                       target_gflops=target, run=run_name(name, target),
                                                       proxy_cpu_s=0.0, proxy_trainings=0)])
    pipelines: list[tuple[int, Found]] = []
    for seed in args.seeds:
        expand_dir = plan.out / run_name("expand" + plan.expand_label, target, seed)
        names = {name: name + (plan.expand_label if name == "expand" else plan.sampler_label)
                 for name in args.strategies}
        missing = [name for name in args.strategies
                   if any((run_name(names[name], target, seed), t) not in done for t in args.train_seeds)]
        if not missing and not args.pipeline:
            continue
        if not RunDir(expand_dir).read_path().get("final"):  # expand has not finished
            ray.start()
            run_expand(plan.settings(expand_dir.name, target, seed),
                       resume=RunDir(expand_dir).exists(), quiet=True)
        budget = expand_found(expand_dir, plan.clock)
        jobs = []
        for strategy in missing:
            name = names[strategy]
            if strategy != "expand":
                ray.start()
            found = budget if strategy == "expand" else search_sampled(plan, strategy, target, seed, budget)
            if found is None:
                print(f"  {run_name(name, target, seed)}: no trained config under the target; skipped", flush=True)
                continue
            scored = "not scored (landed)" if math.isnan(found.proxy_top1) else f"{found.proxy_top1:.3f}"
            print(f"{run_name(name, target, seed)}: {found.config.short} ({count_flops(found.config) / 1e9:.3g} "
                  f"GFLOPs, proxy top-1 {scored}) after {found.trainings} proxy trainings, "
                  f"{found.proxy_cpu_s:.0f} CPU-s", flush=True)
            jobs += jobs_for(found.config, args.train_seeds, done, kind="search", name=name, target_gflops=target,
                             search_seed=seed, run=run_name(name, target, seed), proxy_cpu_s=found.proxy_cpu_s,
                             proxy_trainings=found.trainings, proxy_top1=found.proxy_top1)
        train_all(plan, args.results, jobs)
        pipelines.append((seed, budget))
    if args.pipeline:  # every seed's own run side by side, then the preset for each one's CPU-seconds
        baseline = baseline_presets(target, classes, None)[0]
        for _ in range(2):
            train_all(plan, args.results, [job for seed, found in pipelines
                                           for job in pipeline_jobs(plan, args.results, target, seed, found, baseline)])


def report_tables(files: list[Path], baseline: str | None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The summary, differences, paired differences and own runs against scratch of results files taken together;
    exact duplicate rows
    count once, and one training recorded twice with other values is refused (two machines' runs under one name)."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"no results file: {', '.join(missing)}")
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True).drop_duplicates()
    key = ["kind", "name", "run", "target_gflops", "seed"]
    clash = table[table.duplicated(key, keep=False)]
    if not clash.empty:
        runs = sorted({f"{r.run} seed {r.seed}" for r in clash.itertuples()})
        sys.exit(f"trainings recorded twice with other results: {', '.join(runs[:5])}"
                 f"{' ...' if len(runs) > 5 else ''}; report such files apart")
    if baseline is not None and baseline not in set(table.loc[table["kind"] == "search", "name"]):
        sys.exit(f"--baseline {baseline}: no search of that name in {', '.join(map(str, files))}")
    summary = summarize(table)
    return summary, differences(summary), paired(table, baseline), own_against_scratch(table)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.report:  # the tables of results files, nothing run
        print(markdown(*report_tables(args.report, args.baseline)))
        return 0
    if (args.train_schedule or args.train_data) and args.results == _parser().get_default("results"):
        sys.exit("--train-schedule/--train-data need a --results file of their own: the default one holds the rows "
                 "of the searches' own full schedule, which a rerun would take as done")
    data = args.data.expanduser().resolve() if args.data else Path(default_dataset())
    plan = Plan(data, args.space, args.proxy_schedule, args.full_schedule, args.out, args.threads,
                args.cpus_per_trial, args.max_concurrent, args.jobs, args.train_schedule,
                args.train_data.expanduser().resolve() if args.train_data else None, args.proxy_init, args.step_cost,
                args.final_init, args.epoch_seconds, args.clock)
    if plan.expand_label != plan.label and set(args.strategies) != {"expand"}:
        sys.exit("--proxy-init scratch and --step-cost change expansion only: the samplers would be cut at its "
                 "CPU-seconds under the default's names; add --strategies expand")
    if args.pipeline and (args.train_schedule or args.train_data):
        sys.exit("--pipeline compares expansion's own final training with a preset's on the searches' data and "
                 "schedule: leave out --train-schedule and --train-data")
    class_names = read_split(data, "train").class_names
    if plan.train_data is not None and read_split(plan.train_data, "train").class_names != class_names:
        sys.exit(f"--train-data {plan.train_data} lists other classes than --data {data}")
    classes = len(class_names)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    ray = RayDispatcher(DispatchOptions(), args.out / "ray")  # one local Ray for every search, started when needed
    try:
        for target in args.targets:
            run_target(plan, args, target, classes, ray)
    finally:
        ray.shutdown()
    table = pd.read_csv(args.results)
    summary = summarize(table)
    text = markdown(summary, differences(summary), paired(table), own_against_scratch(table))
    args.results.with_suffix(".md").write_text(text)
    figure = plot(summary, args.targets, args.results.with_suffix(".png"))
    print(f"\n{text}\nrows: {args.results}; plot: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
