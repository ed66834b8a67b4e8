"""Comparing runs at equal proxy compute, on hand-made journals."""

import json
import math

import pytest
import yaml

from test_report import HALVING, make_run, read_journal
from x3dsearch.compare import CPU, WALL, anytime_curve, best_at, clock_of, compare_runs, frontier, proxy_trials
from x3dsearch.errors import UserError
from x3dsearch.rundir import load_run


def _run(path, rows, strategy, cpus=1.0, target=0.3):
    """A run directory with run.yaml and a journal of (gflops, top1, seconds[, status]) rows."""
    path.mkdir()
    (path / "run.yaml").write_text(yaml.safe_dump({"target_gflops": target, "cpus_per_trial": cpus,
                                                   "strategy": strategy}))
    with open(path / "journal.jsonl", "w") as f:
        for i, (gflops, top1, seconds, *status) in enumerate(rows):
            f.write(json.dumps({"config_key": f"{strategy}{i}", "step": i, "axis": "x", "kind": strategy,
                                "gflops": gflops, "top1": top1, "seconds": seconds, "ended": 100.0 + i,
                                "status": status[0] if status else "ok"}) + "\n")
    return path


@pytest.fixture
def runs(tmp_path):
    expand = _run(tmp_path / "exp", [(0.02, 0.30, 10), (0.05, 0.40, 10), (0.1, 0.20, 10, "retried"),
                                     (0.1, 0.50, 20), (0.6, 0.90, 40), (0.29, 0.55, 20)], "expand")
    optuna = _run(tmp_path / "opt", [(0.25, 0.45, 10), (0.9, 0.0, 0, "failed"), (0.2, 0.60, 10),
                                     (0.28, 0.52, 10)], "optuna", cpus=2.0)
    return expand, optuna


def test_compute_counts_finished_attempts_times_cpus(runs):
    expand, optuna = runs
    assert proxy_trials(load_run(expand), 1.0)["compute"].sum() == 100  # the retried attempt is not counted
    trials = proxy_trials(load_run(optuna), 2.0)
    assert list(trials["cumulative"]) == [20, 20, 40, 60]


def test_anytime_curve_only_counts_configs_under_the_target(runs):
    curve = anytime_curve(proxy_trials(load_run(runs[0]), 1.0), 0.3)
    assert list(curve["best_top1"]) == [0.30, 0.40, 0.50, 0.50, 0.55]  # 0.9 at 0.6 GFLOPs is over
    assert best_at(curve, 25) == 0.40 and math.isnan(best_at(curve, 5)) and best_at(curve, math.inf) == 0.55


def test_frontier_keeps_only_undominated(runs):
    front = frontier(proxy_trials(load_run(runs[0]), 1.0))
    assert list(front["gflops"]) == [0.02, 0.05, 0.1, 0.29, 0.6]


def test_table_and_plot_at_common_budget(runs, tmp_path):
    table, plot = compare_runs(runs, out=tmp_path / "c.png")
    assert plot.is_file() and plot.stat().st_size > 10_000
    with pytest.raises(UserError, match="plot file must end in"):  # a name without a format is refused, as by plot
        compare_runs(runs, out=tmp_path / "c")
    for bad in ({"tolerance": -1}, {"tolerance": float("nan")}, {"target_gflops": 0}, {"target_gflops": float("nan")}):
        with pytest.raises(UserError, match="--tolerance must be a finite number >= 0 and a target a positive"):
            compare_runs(runs, out=tmp_path / "c.png", **bad)
    rows = table.set_index("strategy")
    assert (rows["common_budget_s"] == 60).all()  # optuna spent 60 CPU-seconds, expand 100
    assert rows.loc["expand", "best_top1_at_common"] == 0.50
    assert rows.loc["optuna", "best_top1_at_common"] == 0.60
    assert rows.loc["expand", "best_top1_final"] == 0.55
    assert rows["final_top1"].isna().all() and rows["final_split"].isna().all()  # no final training


def _measure_cpu(run, cpu_of_seconds, keep=lambda record: True):
    """Give the journal's attempts (those ``keep`` picks) the ``cpu_seconds`` a run recorded since 2026-12-06."""
    records = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    (run / "journal.jsonl").write_text("".join(json.dumps(
        dict(r, cpu_seconds=cpu_of_seconds(r["seconds"])) if keep(r) else r) + "\n" for r in records))


def test_runs_that_all_measured_cpu_time_compare_on_it(runs, tmp_path):
    expand, optuna = runs
    _measure_cpu(expand, lambda seconds: seconds / 2)  # a busy box: half of each trial's wall time on a CPU
    assert clock_of([load_run(expand)], [{}]) == CPU
    assert proxy_trials(load_run(expand), 1.0, CPU)["compute"].sum() == 50
    table, _ = compare_runs(runs, out=tmp_path / "c.png")  # optuna's journal has no CPU time: both on wall seconds
    assert set(table["clock"]) == {WALL} and table.set_index("strategy")["compute_s"].to_dict() == {
        "expand": 100, "optuna": 60}
    _measure_cpu(optuna, lambda seconds: 2 * seconds)  # two CPUs busy all along
    table, _ = compare_runs(runs, out=tmp_path / "c.png")
    rows = table.set_index("strategy")
    assert set(table["clock"]) == {CPU} and rows["compute_s"].to_dict() == {"expand": 50, "optuna": 60}
    assert (rows["common_budget_s"] == 50).all() and rows.loc["optuna", "best_top1_at_common"] == 0.60


def test_one_attempt_without_cpu_time_or_trials_on_gpus_keep_the_wall_clock(runs):
    expand, _ = runs
    _measure_cpu(expand, lambda seconds: seconds, keep=lambda record: record["step"] != 3)
    assert clock_of([load_run(expand)], [{}]) == WALL
    _measure_cpu(expand, lambda seconds: seconds)
    with open(expand / "journal.jsonl", "a") as journal:  # a lost worker's attempt: failed, timing nothing
        journal.write(json.dumps({"config_key": "lost", "step": 6, "axis": "x", "kind": "expand", "gflops": 0.1,
                                  "ended": 200.0, "status": "failed"}) + "\n")
    assert clock_of([load_run(expand)], [{}]) == CPU
    assert clock_of([load_run(expand)], [{"gpus_per_trial": 1.0}]) == WALL  # CPU time says nothing of a GPU's
    assert clock_of([load_run(expand)], [{"gpus_per_trial": 0.0}]) == CPU


@pytest.mark.parametrize("splits, top1, split", [(("val", "test"), 0.55, "test"), (("val",), 0.7, "val")])
def test_table_quotes_each_final_model_on_test_where_it_exists(tmp_path, splits, top1, split):
    run = make_run(tmp_path, splits=splits)
    table, _ = compare_runs([run], out=tmp_path / "c.png")
    assert table.loc[0, "final_top1"] == pytest.approx(top1) and table.loc[0, "final_split"] == split


def test_rungs_and_seed_repeats_are_trials_of_one_config(tmp_path):
    run = tmp_path / "halving"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump({"target_gflops": 0.3, "cpus_per_trial": 2.0}))
    # (config, rung, seed offset, top1): a looks best at rung 1 but falls at rung 2; b's close call gets a 2nd seed
    rows = [("a", 1, 0, 0.50), ("b", 1, 0, 0.30), ("a", 2, 0, 0.40), ("b", 2, 0, 0.45), ("b", 2, 1, 0.47)]
    (run / "journal.jsonl").write_text("".join(
        json.dumps({"config_key": key, "rung": rung, "seed_offset": offset, "top1": top1, "step": 1, "axis": "x",
                    "kind": "expand", "gflops": 0.1, "seconds": 10, "ended": 100.0 + i, "status": "ok"}) + "\n"
        for i, (key, rung, offset, top1) in enumerate(rows)))
    trials = proxy_trials(load_run(run), 2.0)
    assert trials["compute"].sum() == 100  # every rung and seed spent its own seconds
    assert list(anytime_curve(trials, 0.3)["best_top1"]) == pytest.approx([0.50, 0.50, 0.40, 0.45, 0.46])
    front = frontier(trials)
    assert list(front["config_key"]) == ["b"] and front["top1"][0] == pytest.approx(0.46)
    table, _ = compare_runs([run], out=tmp_path / "c.png")
    assert (table["trials"][0], table["configs"][0], table["best_top1_final"][0]) == (5, 2, pytest.approx(0.46))


def test_compute_of_a_searched_run_sums_every_rung_and_seed(tmp_path):
    run = make_run(tmp_path, proxy=HALVING, init="inherit", final=False)
    spent = [r for r in read_journal(run) if r["status"] != "retried"]
    assert len(spent) > len({r["config_key"] for r in spent}) and any(r["seed_offset"] for r in spent)
    assert proxy_trials(load_run(run), 2.0)["compute"].sum() == pytest.approx(2.0 * sum(r["seconds"] for r in spent))


def test_different_targets_need_an_explicit_one(tmp_path, runs):
    other = _run(tmp_path / "other", [(0.1, 0.5, 1)], "expand", target=1.0)
    with pytest.raises(UserError, match="different targets"):
        compare_runs([runs[0], other], out=tmp_path / "c.png")
    table, _ = compare_runs([runs[0], other], out=tmp_path / "c.png", target_gflops=1.0)
    assert len(table) == 2
