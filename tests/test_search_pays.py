"""experiments/search_pays.py's pure pieces: the equal-compute cut, the preset baselines, the summary.

The end-to-end run (searches on Ray, full trainings) takes minutes even on a tiny dataset, too long
for the suite; the script's docstring says how to run it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from x3dsearch.compare import anytime_curve, best_at, proxy_trials
from x3dsearch.space import load_space

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "search_pays.py"
_SPEC = importlib.util.spec_from_file_location("search_pays", _PATH)
search_pays = importlib.util.module_from_spec(_SPEC)
sys.modules["search_pays"] = search_pays  # dataclasses resolve their module by name
_SPEC.loader.exec_module(search_pays)


def _journal() -> pd.DataFrame:
    """Six proxy trainings of four configs (one over two rungs, one failed, one over the target)."""
    rows = [("a", 1.0, "ok", 0.30, 10, 1), ("b", 1.0, "ok", 0.50, 20, 1), ("c", 3.0, "ok", 0.90, 5, 1),
            ("a", 1.0, "ok", 0.60, 10, 2), ("d", 1.0, "failed", None, 30, 1), ("b", 1.0, "ok", 0.40, 15, 2)]
    return pd.DataFrame([{"config_key": key, "config": {"depth": len(key)}, "gflops": gflops, "status": status,
                          "top1": top1, "seconds": seconds, "rung": rung, "ended": i}
                         for i, (key, gflops, status, top1, seconds, rung) in enumerate(rows)])


@pytest.mark.parametrize("budget", [5, 10, 30, 35, 45, 60, 75, 90, math.inf])
def test_best_within_is_the_anytime_curve_cut(budget):
    trials = proxy_trials(_journal(), cpus_per_trial=1.0)
    best = search_pays.best_within(trials, budget, target=2.0)
    expected = best_at(anytime_curve(trials, 2.0), budget)
    assert (best is None and math.isnan(expected)) or best["top1"] == expected


def test_best_within_counts_a_config_at_its_highest_rung_so_far():
    trials = proxy_trials(_journal(), cpus_per_trial=2.0)  # cumulative CPU-s 20, 60, 70, 90, 150, 180
    assert search_pays.best_within(trials, 60, 2.0)["config_key"] == "b"
    assert search_pays.best_within(trials, 90, 2.0)["config_key"] == "a"  # a's rung 2 beats b's rung 1
    assert search_pays.best_within(trials, 180, 2.0)["top1"] == 0.60  # b fell to 0.40 at rung 2
    assert search_pays.best_within(trials, 10, 2.0) is None


def test_baseline_presets_take_the_costliest_under_the_target_else_the_cheapest():
    assert [n for n, _ in search_pays.baseline_presets(2.0, 12, None)] == ["S"]
    assert [n for n, _ in search_pays.baseline_presets(6.0, 12, None)] == ["M"]
    (name, config), = search_pays.baseline_presets(0.001, 12, None)
    assert name == "X2D" and config.num_classes == 12
    assert [n for n, _ in search_pays.baseline_presets(0.001, 3, ["XS", "M"])] == ["XS", "M"]
    assert search_pays.baseline_presets(2.0, 12, []) == []  # --presets with no names: none


def test_summary_and_differences_per_target():
    rows = [("preset", "S", "S", 0.40), ("preset", "S", "S", 0.44), ("preset", "XS", "XS", 0.30),
            ("search", "expand", "e0", 0.50), ("search", "expand", "e0", 0.54), ("search", "expand", "e1", 0.60),
            ("search", "expand", "e1", 0.64), ("search", "random", "r0", 0.45), ("search", "random", "r0", 0.47)]
    table = pd.DataFrame([{"kind": kind, "name": name, "run": run, "target_gflops": 2.0, "status": "ok",
                           "val_top1": top1 + 0.1, "test_top1": top1,
                           "test_per_group": json.dumps({"texture": top1 - 0.2, "order": top1 + 0.1}),
                           "gflops": 1.9, "params": 3e6, "proxy_cpu_s": 100.0, "train_clips_per_s": 30.0,
                           "latency_ms": 20.0} for kind, name, run, top1 in rows])
    table.loc[len(table)] = dict(table.iloc[0], status="failed", test_top1=math.nan)
    summary = search_pays.summarize(table).set_index("name")
    assert list(summary.index) == ["S", "XS", "expand", "random"]  # the failed row left out
    assert list(summary["n"]) == [2, 1, 4, 2] and list(summary["runs"]) == [1, 1, 2, 1]
    assert summary.loc["expand", "top1"] == pytest.approx(0.57)
    assert summary.loc["expand", "top1_se"] == pytest.approx(0.05)  # over the two searches' means 0.52, 0.62
    assert summary.loc["random", "top1_se"] == pytest.approx(0.01 / 1)  # one search: over its training seeds
    assert summary.loc["expand", "texture"] == pytest.approx(0.37) and summary.loc["S", "order"] == pytest.approx(0.52)
    diffs = search_pays.differences(summary.reset_index()).set_index("minus")
    assert list(diffs.index) == ["best preset (S)", "random"]
    assert diffs.loc["best preset (S)", "top1_diff"] == pytest.approx(0.15)
    assert diffs.loc["random", "top1_diff"] == pytest.approx(0.11)
    assert diffs.loc["random", "std_error"] == pytest.approx(math.sqrt(0.05 ** 2 + 0.01 ** 2))
    text = search_pays.markdown(summary.reset_index(), search_pays.differences(summary.reset_index()))
    assert "| 2 | search | expand | 2 | 4 | 0.570 ± 0.050 | 0.370 | 0.670 |" in text and "+0.150 ± " in text


def test_a_labelled_expansion_is_compared_with_the_samplers_of_its_own_proxy():
    rows = [("preset", "S", 0.40), ("search", "expand+sh", 0.50), ("search", "random+sh", 0.45),
            ("search", "random", 0.30)]
    summary = pd.DataFrame([{"target_gflops": 2.0, "kind": kind, "name": name, "top1": top1, "top1_se": 0.01}
                            for kind, name, top1 in rows])
    diffs = search_pays.differences(summary)
    assert list(diffs["minus"]) == ["best preset (S)", "random+sh"]
    assert diffs["top1_diff"].tolist() == pytest.approx([0.10, 0.05])


def test_a_from_scratch_expansion_is_named_apart_and_compared_with_the_samplers_of_its_schedule(tmp_path):
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "experiments/schedules/cpu_proxy_sh.yaml",
                            "cpu_full", tmp_path / "runs", 1, 1.0, None, proxy_init="scratch")
    assert (plan.label, plan.expand_label) == ("+cpu_proxy_sh", "+cpu_proxy_sh+scratch")  # samplers: from scratch
    assert plan.settings("run", 2.0, 0).proxy_init == "scratch"  # also for the pipeline's final training
    assert replace(plan, proxy_init="inherit").settings("run", 2.0, 0).proxy_init == "inherit"
    rows = [("preset", "S", 0.40), ("search", "expand+scratch", 0.50), ("search", "random", 0.45),
            ("search", "random+sh", 0.30)]
    summary = pd.DataFrame([{"target_gflops": 2.0, "kind": kind, "name": name, "top1": top1, "top1_se": 0.01}
                            for kind, name, top1 in rows])
    diffs = search_pays.differences(summary)
    assert list(diffs["minus"]) == ["best preset (S)", "random"]
    assert diffs["top1_diff"].tolist() == pytest.approx([0.10, 0.05])


def test_a_step_cost_cap_changes_only_expansions_space_and_name(tmp_path):
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None, step_cost=2.0)
    assert (plan.label, plan.expand_label) == ("", "+step2x")
    space = load_space(plan.settings("run", 2.0, 0).space)
    assert space.step_cost == 2.0 and replace(space, step_cost=None) == load_space("x3d_kinetics")
    rows = [("preset", "S", 0.40), ("search", "expand+step2x", 0.50), ("search", "expand+scratch+step2x", 0.35),
            ("search", "random", 0.45), ("search", "random+sh", 0.30)]
    summary = pd.DataFrame([{"target_gflops": 2.0, "kind": kind, "name": name, "top1": top1, "top1_se": 0.01}
                            for kind, name, top1 in rows])
    diffs = search_pays.differences(summary)
    assert list(diffs["minus"]) == ["best preset (S)", "random"] * 2
    assert diffs["top1_diff"].tolist() == pytest.approx([0.10, 0.05, -0.05, -0.10])


def test_the_pipeline_row_trains_expansions_own_run_then_the_preset_for_its_cpu_seconds(tmp_path, capsys):
    from x3dsearch.config import preset

    results = tmp_path / "rows.csv"
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None)
    s = preset("S", num_classes=12)
    rows = [dict(kind="preset", name="S", run="preset-S-2g", seed=seed, status="ok", train_s=train_s, epochs=8)
            for seed, train_s in ((0, 96.0), (1, 100.0), (2, 200.0))]  # a median of 12.5 CPU-s per epoch
    pd.DataFrame(rows, columns=search_pays.COLUMNS).to_csv(results, index=False)
    found = search_pays.Found(preset("XS", num_classes=12), 0.4, 200.0, 30)
    (own,) = search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s))
    assert own.run_dir == tmp_path / "runs" / "expand-2g-seed1" and own.epochs is None and own.seed == 1
    assert (own.row["kind"], own.row["name"], own.row["run"]) == ("pipeline", "expand", "pipeline-expand-2g-seed1")
    finished = dict(own.row, seed=1, status="ok", train_s=50.0, epochs=8)
    pd.DataFrame([finished], columns=search_pays.COLUMNS).to_csv(results, mode="a", header=False, index=False)
    (same,) = search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s))
    assert same.config == s and same.run_dir is None and same.epochs == 20  # (200 + 50) / 12.5 CPU-s
    labelled = replace(plan, proxy_schedule="experiments/schedules/cpu_proxy_sh.yaml")
    assert search_pays.pipeline_jobs(labelled, results, 2.0, 1, found, ("S", s))[0].row["run"] == \
        "pipeline-expand+cpu_proxy_sh-2g-seed1"  # another proxy's pipeline is a run of its own
    assert (same.row["name"], same.row["run"], same.row["proxy_cpu_s"]) == ("S same CPU-s", "pipeline-S-2g-seed1", 0)
    pd.DataFrame([dict(same.row, seed=1, status="ok", train_s=250.0, epochs=20)],
                 columns=search_pays.COLUMNS).to_csv(results, mode="a", header=False, index=False)
    assert search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s)) == []
    assert "warning" not in capsys.readouterr().out  # it used the own run's 250 CPU-s
    pd.DataFrame([dict(same.row, seed=1, status="ok", train_s=160.0, epochs=20)],
                 columns=search_pays.COLUMNS).to_csv(results, mode="a", header=False, index=False)
    assert search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s)) == []
    assert ("warning: pipeline-S-2g-seed1 used 160 CPU-s, 64% of the own run's 250; it trained at 8.0 s an epoch"
            in capsys.readouterr().out)  # its rate came from rows trained under another load
    (rated,) = search_pays.pipeline_jobs(replace(plan, epoch_s=5.0), results, 2.0, 1, found, ("S", s))
    assert (rated.epochs, rated.row["run"]) == (50, "pipeline-S+rate5s-2g-seed1")  # (200 + 50) / 5 CPU-s
    # a final training from scratch runs in a copy of the search's folder, without its final/, in rows of its own
    search = tmp_path / "runs" / "expand-2g-seed1"
    for folder in ("final", "weights", "trials"):
        (search / folder).mkdir(parents=True)
    (search / "journal.jsonl").write_text("{}\n")
    (scratch,) = search_pays.pipeline_jobs(replace(plan, final_init="scratch"), results, 2.0, 1, found, ("S", s))
    assert scratch.run_dir == tmp_path / "runs" / "expand-2g-seed1+final-scratch"
    assert sorted(p.name for p in scratch.run_dir.iterdir()) == ["journal.jsonl"]
    assert (scratch.row["name"], scratch.row["run"]) == ("expand+final-scratch",
                                                         "pipeline-expand+final-scratch-2g-seed1")
    assert replace(plan, final_init="scratch").settings("x", 2.0, 1).final_init == "scratch"
    longer = replace(plan, full_schedule="cpu_long_full", final_init="scratch")
    assert longer.pipeline_label == "+final-scratch+full-cpu_long_full"  # another final training: rows of its own
    (inherited,) = search_pays.pipeline_jobs(replace(plan, full_schedule="cpu_long_full"), results, 2.0, 1, found,
                                             ("S", s))
    assert sorted(p.name for p in inherited.run_dir.iterdir()) == ["journal.jsonl", "weights"]  # it starts from them


def test_on_the_cpu_clock_the_preset_gets_the_own_runs_measured_cpu_seconds(tmp_path, capsys):
    from x3dsearch.config import preset

    results = tmp_path / "rows.csv"
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None, clock="cpu")
    s = preset("S", num_classes=12)
    # a busy box: the wall seconds (train_s) are twice the CPU time, and only the CPU time counts
    rows = [dict(kind="preset", name="S", run="preset-S-2g", seed=seed, status="ok", train_s=2 * cpu_s,
                 train_cpu_s=cpu_s, epochs=8) for seed, cpu_s in ((0, 80.0), (1, 100.0), (2, 120.0))]
    pd.DataFrame(rows, columns=search_pays.COLUMNS).to_csv(results, index=False)
    found = search_pays.Found(preset("XS", num_classes=12), 0.4, 200.0, 30)  # 200 proxy CPU-s, measured
    (own,) = search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s))
    assert own.row["run"] == "pipeline-expand-2g-seed1"  # the own run does not depend on the clock
    pd.DataFrame([dict(own.row, seed=1, status="ok", train_s=90.0, train_cpu_s=50.0, epochs=8)],
                 columns=search_pays.COLUMNS).to_csv(results, mode="a", header=False, index=False)
    (same,) = search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s))
    assert (same.epochs, same.row["run"]) == (20, "pipeline-S+cpu-clock-2g-seed1")  # (200 + 50) / 12.5 CPU-s
    pd.DataFrame([dict(same.row, seed=1, status="ok", train_s=500.0, train_cpu_s=160.0, epochs=20)],
                 columns=search_pays.COLUMNS).to_csv(results, mode="a", header=False, index=False)
    assert search_pays.pipeline_jobs(plan, results, 2.0, 1, found, ("S", s)) == []
    assert ("warning: pipeline-S+cpu-clock-2g-seed1 used 160 CPU-s, 64% of the own run's 250; it trained at 8.0 s "
            "an epoch" in capsys.readouterr().out)
    (rated,) = search_pays.pipeline_jobs(replace(plan, epoch_s=5.0, threads=2), results, 2.0, 1, found, ("S", s))
    assert rated.epochs == 50  # a given rate is CPU-seconds per epoch on this clock, whatever the threads
    old = tmp_path / "old.csv"  # rows from before CPU time was recorded: nothing to count on this clock, said so
    pd.DataFrame([{k: v for k, v in row.items() if k != "train_cpu_s"} for row in rows]
                 + [dict(own.row, seed=1, status="ok", train_s=90.0, epochs=8)]).to_csv(old, index=False)
    with pytest.raises(SystemExit, match="pipeline-expand-2g-seed1: its row did not measure its training's CPU time"):
        search_pays.pipeline_jobs(plan, old, 2.0, 1, found, ("S", s))
    pd.DataFrame([{k: v for k, v in row.items() if k != "train_cpu_s"} for row in rows]
                 + [dict(own.row, seed=1, status="ok", train_s=90.0, train_cpu_s=50.0, epochs=8)]).to_csv(old,
                                                                                                       index=False)
    with pytest.raises(SystemExit, match="no row of S has its CPU time measured to take its seconds per epoch from"):
        search_pays.pipeline_jobs(plan, old, 2.0, 1, found, ("S", s))
    wall = replace(plan, clock="wall")  # the wall clock counts the busy box's seconds: (200 + 90) / 25 s an epoch
    assert search_pays.pipeline_jobs(wall, old, 2.0, 1, found, ("S", s))[0].epochs == 12
    pd.DataFrame([dict(own.row, seed=1, status="ok", train_s=90.0, epochs=8)]).to_csv(old, index=False)
    with pytest.raises(SystemExit, match="no row of S to take its seconds per epoch from: pass --epoch-seconds"):
        search_pays.pipeline_jobs(wall, old, 2.0, 1, found, ("S", s))  # no preset rows yet


def test_the_cpu_clock_refuses_a_journal_without_cpu_time_and_names_the_samplers_apart(tmp_path):
    run = tmp_path / "expand-2g-seed0"
    run.mkdir()
    (run / "run.yaml").write_text("cpus_per_trial: 2.0\n")
    (run / "journal.jsonl").write_text("".join(json.dumps(
        {"config_key": key, "gflops": 1.0, "status": "ok", "top1": 0.5, "seconds": 10, "ended": i}) + "\n"
        for i, key in enumerate("ab")))
    assert search_pays.run_trials(run, "wall")["compute"].sum() == 40
    with pytest.raises(SystemExit, match="did not all measure their CPU time"):
        search_pays.run_trials(run, "cpu")
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None)
    assert (plan.sampler_label, replace(plan, clock="cpu").sampler_label) == ("", "+cpu-clock")
    assert replace(plan, clock="cpu").expand_label == ""  # expansion's search is the same on either clock
    rows = [("search", "expand", 0.50), ("search", "random+cpu-clock", 0.45), ("pipeline", "expand", 0.66),
            ("pipeline", "S same CPU-s+cpu-clock", 0.68)]
    summary = pd.DataFrame([{"target_gflops": 2.0, "kind": kind, "name": name, "top1": top1, "top1_se": 0.03}
                            for kind, name, top1 in rows])
    assert list(search_pays.differences(summary)["minus"]) == ["random+cpu-clock", "S same CPU-s+cpu-clock"]


def test_a_results_file_from_before_a_new_column_gets_it_and_the_next_rows_line_up(tmp_path, monkeypatch):
    from x3dsearch.config import preset

    results = tmp_path / "rows.csv"
    before = [c for c in search_pays.COLUMNS if c != "train_cpu_s"] + ["a column of its own"]
    pd.DataFrame([dict(kind="search", name="expand", run="expand-2g-seed0", search_seed=0, seed=0, status="ok",
                       train_s=96.0, epochs=8, **{"a column of its own": "kept"})],
                 columns=before).to_csv(results, index=False)
    written = results.read_text().splitlines()[1]
    monkeypatch.setattr(search_pays, "ProcessPoolExecutor", _InProcess)
    monkeypatch.setattr(search_pays, "_train_job", lambda plan, job: dict(job.row, seed=job.seed, status="ok",
                                                                          val_top1=0.5, test_top1=0.4, train_s=10.0,
                                                                          train_clips_per_s=3.0, train_cpu_s=9.0))
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None)
    search_pays.train_all(plan, results, [search_pays.TrainJob(preset("S", num_classes=12), 1,
                                                                dict(kind="preset", name="S", run="preset-S-2g"))])
    lines = results.read_text().splitlines()
    assert lines[1] == written + ","  # the old row as written (its 0 still 0), an empty train_cpu_s after it
    table = pd.read_csv(results)
    assert list(table.columns) == before + ["train_cpu_s"] and math.isnan(table["train_cpu_s"][0])
    assert table["a column of its own"].tolist()[0] == "kept" and table["train_cpu_s"][1] == 9.0
    assert (table["run"][1], table["train_s"][1], table["test_top1"][1]) == ("preset-S-2g", 10.0, 0.4)


class _InProcess:
    """A process pool that runs each job in this process (the monkeypatched trainings live here)."""

    def __init__(self, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        future.set_result(fn(*args))
        return future


def test_a_longer_training_scales_its_time_guard_with_its_epochs(tmp_path, monkeypatch):
    from x3dsearch.config import preset

    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None)
    seen = []
    monkeypatch.setattr(search_pays, "train", lambda config, data, recipe, **kw: seen.append(recipe))
    for epochs in (None, 4, 40):
        search_pays.train_once(plan, preset("S", num_classes=12), 0, epochs)
    unguarded = tmp_path / "unguarded.yaml"
    unguarded.write_text("epochs: 8\ntime_budget_s: null\n")
    search_pays.train_once(replace(plan, full_schedule=str(unguarded)), preset("S", num_classes=12), 0, 40)
    assert [(r.epochs, r.time_budget_s) for r in seen] == [(8, 600), (4, 600), (40, 3000), (40, None)]


def test_trainings_on_other_data_or_schedule_than_the_searches_use_them_in_folders_of_their_own(tmp_path, monkeypatch):
    from x3dsearch.config import preset

    searched = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                                None)
    larger = replace(searched, train_schedule="cpu_proxy_long", train_data=tmp_path / "data96")
    seen = []
    monkeypatch.setattr(search_pays, "train", lambda config, data, recipe, **kw: seen.append((data, recipe.name,
                                                                                              kw["out_dir"])))
    same_data = replace(searched, train_data=tmp_path / "data")
    for plan in (searched, larger, same_data, replace(searched, train_data=tmp_path / "data96"),
                 replace(searched, train_schedule="cpu_proxy_long")):
        search_pays.train_once(plan, preset("S", num_classes=12), 0)
    assert [s[:2] for s in seen] == [(str(tmp_path / "data"), "cpu_full"), (str(tmp_path / "data96"), "cpu_proxy_long"),
                                     (str(tmp_path / "data"), "cpu_full"), (str(tmp_path / "data96"), "cpu_full"),
                                     (str(tmp_path / "data"), "cpu_proxy_long")]
    folders = [s[2] for s in seen]
    assert folders[2] == folders[0] and len(set(folders)) == 4  # the searches' own data keeps its folders
    assert searched.settings("expand-2g-seed0", 2.0, 0) == larger.settings("expand-2g-seed0", 2.0, 0)


def test_an_own_run_whose_final_training_started_elsewhere_than_asked_is_refused(tmp_path, monkeypatch):
    plan = search_pays.Plan(tmp_path / "data", "x3d_kinetics", "cpu_proxy", "cpu_full", tmp_path / "runs", 1, 1.0,
                            None)
    final = {"status": "ok", "top1": 0.5, "init": "inherit"}
    monkeypatch.setattr(search_pays, "RunView", lambda run_dir: type("View", (), {"final": final})())
    assert search_pays.own_final(plan, tmp_path, 2.0, 0).top1 == 0.5
    final["init"] = "scratch: parent weights missing"  # inheriting was asked, the weights were not there
    with pytest.raises(RuntimeError, match="started from scratch: parent weights missing, not inherit"):
        search_pays.own_final(plan, tmp_path, 2.0, 0)
    final["init"] = "scratch"  # candidates from scratch leave no weights: their final training starts there too
    assert search_pays.own_final(replace(plan, proxy_init="scratch"), tmp_path, 2.0, 0).top1 == 0.5


def test_expansions_own_run_is_compared_with_the_preset_for_its_cpu_seconds_only():
    rows = [("preset", "S", 0.40), ("search", "expand", 0.50), ("search", "random", 0.45),
            ("pipeline", "expand", 0.66), ("pipeline", "S same CPU-s", 0.68),
            ("pipeline", "S same CPU-s+final-scratch", 0.60),  # another own run's preset row: not this one's
            ("pipeline", "S same CPU-s+rate17s", 0.70)]  # this one's, at a given rate
    summary = pd.DataFrame([{"target_gflops": 2.0, "kind": kind, "name": name, "top1": top1, "top1_se": 0.03}
                            for kind, name, top1 in rows])
    diffs = search_pays.differences(summary)
    assert list(zip(diffs["expansion"], diffs["minus"])) == [("expand", "best preset (S)"), ("expand", "random"),
                                                            ("expand, its own run", "S same CPU-s"),
                                                            ("expand, its own run", "S same CPU-s+rate17s")]
    assert diffs["top1_diff"].tolist() == pytest.approx([0.10, 0.05, -0.02, -0.04])
    assert diffs["std_error"].tolist() == pytest.approx([math.sqrt(2) * 0.03] * 4)


def test_trainings_of_their_own_need_a_results_file_of_their_own():
    with pytest.raises(SystemExit, match="need a --results file of their own"):
        search_pays.main(["--train-schedule", "cpu_long_full"])


@pytest.mark.parametrize("lever", [["--proxy-init", "scratch"], ["--step-cost", "2"]])
def test_an_expansion_only_lever_refuses_the_samplers_it_would_misname(lever, tmp_path):
    with pytest.raises(SystemExit, match="change expansion only"):
        search_pays.main([*lever, "--data", str(tmp_path), "--results", str(tmp_path / "rows.csv")])


def _search_rows(rows: list[tuple[str, int, int, float, str]]) -> pd.DataFrame:
    """Search rows of (name, search seed, training seed, test top-1, status) at 2 GFLOPs."""
    return pd.DataFrame([{"kind": "search", "name": name, "run": f"{name}-2g-seed{k}", "target_gflops": 2.0,
                          "search_seed": k, "seed": t, "status": status, "test_top1": top1}
                         for name, k, t, top1, status in rows])


def test_differences_paired_by_search_seed_count_only_seeds_with_every_training_ok_on_both_sides():
    lean, lean4 = "expand+cpu_proxy_lean", "expand+cpu_proxy_lean4"
    rand, rand4 = "random+cpu_proxy_lean", "random+cpu_proxy_lean4"
    rows = [(lean, k, t, top1, "ok") for k, t, top1 in [(0, 0, .80), (0, 1, .90), (1, 0, .60), (1, 1, .70),
                                                         (2, 0, .50), (2, 1, .50), (3, 0, .10), (4, 0, .2), (4, 1, .2)]]
    rows += [(lean4, k, t, top1, "ok") for k, t, top1 in [(0, 0, .90), (0, 1, .90), (1, 0, .60), (1, 1, .80),
                                                          (2, 0, .90), (3, 0, .90), (4, 0, .9)]]
    rows += [(lean4, 2, 1, math.nan, "diverged"), (lean4, 4, 1, math.nan, "ok")]  # seeds 2 and 4 incomplete
    rows += [(rand, k, t, .60, "ok") for k in (0, 1, 2) for t in (0, 1)] + [(rand4, 0, 0, .1, "ok"),
                                                                           (rand4, 0, 1, .1, "ok")]
    table = _search_rows(rows)
    table.loc[len(table)] = dict(table.iloc[0], kind="preset", name="S", run="S", search_seed=math.nan)
    # the lever minus the default: seeds 0 and 1 only (seed 3 has one training on each side, 2 and 4 a failed one)
    pairs = search_pays.paired(table, baseline=lean).set_index(["search", "minus"])
    assert list(pairs.index) == [(lean4, lean), (rand, lean)]  # random+cpu_proxy_lean4 shares one seed: no pair
    assert pairs.loc[(lean4, lean), "search_seeds"] == 2 and pairs.loc[(lean4, lean), "excluded"] == 3
    assert pairs.loc[(lean4, lean), "top1_diff"] == pytest.approx((0.05 + 0.05) / 2)  # the lever's side first
    assert pairs.loc[(lean4, lean), "std_error"] == pytest.approx(0.0)
    assert pairs.loc[(rand, lean), "search_seeds"] == 3
    assert pairs.loc[(rand, lean), "top1_diff"] == pytest.approx(((.6 - .85) + (.6 - .65) + (.6 - .5)) / 3)
    # without a baseline each expansion meets only the sampler cut at its own compute
    pairs = search_pays.paired(table).set_index(["search", "minus"])
    assert list(pairs.index) == [(lean, rand)]


def test_report_takes_several_files_together_and_refuses_one_training_recorded_twice(tmp_path, capsys):
    lean, lean4 = "expand+cpu_proxy_lean", "expand+cpu_proxy_lean4"
    rows = [(name, k, t, top1 + 0.1 * k, "ok") for name, top1 in ((lean, .7), (lean4, .8))
            for k in (0, 1) for t in (0, 1)]
    table = _search_rows(rows).assign(val_top1=0.5, test_per_group="{}", gflops=2.0, params=1e6, proxy_cpu_s=1.0,
                                      train_clips_per_s=1.0, latency_ms=1.0)
    table[table["name"] == lean].to_csv(tmp_path / "lean.csv", index=False)
    table[table["name"] == lean4].to_csv(tmp_path / "lean4.csv", index=False)
    files = [str(tmp_path / "lean.csv"), str(tmp_path / "lean4.csv")]
    assert search_pays.main(["--report", *files, files[0], "--baseline", lean]) == 0  # a file twice: rows once
    out = capsys.readouterr().out
    assert f"| 2 | {lean4} | {lean} | 2 | 0 | +0.100 ± 0.000 |" in out
    assert "Expansion against the others" not in out  # no preset or sampler to compare with
    table.assign(test_top1=0.1).head(1).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(SystemExit, match=re.escape(f"recorded twice with other results: {lean}-2g-seed0 seed 0")):
        search_pays.main(["--report", *files, str(tmp_path / "other.csv")])
    with pytest.raises(SystemExit, match="--baseline expand: no search of that name"):
        search_pays.main(["--report", *files, "--baseline", "expand"])
    with pytest.raises(SystemExit, match="no results file"):
        search_pays.main(["--report", str(tmp_path / "missing.csv")])


def test_presets_given_without_names_train_none():
    assert search_pays._parser().parse_args(["--presets", "--train-seeds", "0"]).presets == []


def test_own_runs_meet_the_same_model_from_scratch_with_the_same_training_seed(tmp_path, capsys):
    fast, fast_sh = "expand+cpu_proxy_fast", "expand+cpu_proxy_fast+step2x"
    rows = [(fast, k, t, .70 + .01 * t, "ok") for k in (0, 1) for t in (0, 1, 2)]
    rows += [(fast_sh, 0, t, .10, "ok") for t in (0, 1, 2)]  # another search, whose name starts with fast's
    table = _search_rows(rows).assign(config=lambda t: "c" + t["search_seed"].astype(str), train_s=100.0)
    own = [dict(kind="pipeline", name=name, run=f"pipeline-{name}-2g-seed{k}", target_gflops=2.0, search_seed=k,
                seed=k, status="ok", test_top1=top1, config=f"c{k}", train_s=50.0)
           for name, k, top1 in ((fast, 0, .80), (fast, 1, .66), (fast + "+final-scratch", 1, .61),
                                 (fast_sh, 0, .20), (fast_sh + "+full-cpu_long_full", 2, .5))]
    own.append(dict(own[0], name="S same CPU-s", run="pipeline-S-2g-seed0", config="S"))  # the preset's: no pair
    table = pd.concat([table, pd.DataFrame(own)], ignore_index=True)
    pairs = search_pays.own_against_scratch(table).set_index(["own_run", "search_seed"])
    # each own run against its own search's training with the same seed (search seed k trained seed k)
    assert list(pairs["search"]) == [fast, fast, fast, fast_sh, fast_sh]
    assert list(pairs["top1_diff"][:4]) == pytest.approx([.80 - .70, .66 - .71, .61 - .71, .20 - .10])
    assert math.isnan(pairs.loc[(fast_sh + "+full-cpu_long_full", 2), "scratch_top1"])  # its search has no seed 2
    assert pairs.loc[(fast, 0), "own_s"] == 50.0 and pairs.loc[(fast, 0), "scratch_s"] == 100.0
    table.assign(val_top1=0.5, test_per_group="{}", gflops=2.0, params=1e6, proxy_cpu_s=1.0, train_clips_per_s=1.0,
                 latency_ms=1.0).to_csv(tmp_path / "rows.csv", index=False)
    assert search_pays.main(["--report", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    assert f"| 2 | {fast} | 1 | 1 | 0.660 | 0.710 | -0.050 | 50 / 100 |" in out
    assert f"| 2 | {fast} | 2 | +0.025 ± 0.075 |" in out  # (0.10 - 0.05) / 2, std 0.106 over √2
    assert f"| 2 | {fast_sh}+full-cpu_long_full | 2 | 2 | 0.500 | not trained yet | — | 50 / — |" in out
    assert f"| 2 | {fast_sh}+full-cpu_long_full | 0 | — |" in out
    table.loc[table["run"] == f"pipeline-{fast}-2g-seed1", "config"] = "other"
    with pytest.raises(SystemExit, match=f"pipeline-{re.escape(fast)}-2g-seed1: its model is not the one"):
        search_pays.own_against_scratch(table)
