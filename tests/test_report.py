"""Run reports on fake run directories written through the real journal and path code.

``make_run`` (also used by test_plot and test_export) runs the real coordinator with a
fake dispatcher: records and path.json have exactly the shapes a real search writes.
"""

import io
import json
import math
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import yaml
import pytest
import torch

from x3dsearch.cli import main
from x3dsearch.config import X3DConfig
from x3dsearch.cost import count_flops
from x3dsearch.live import LiveView
from x3dsearch.model import build_model
from x3dsearch.report import describe_provenance, render, run_report
from x3dsearch.rundir import RunDir, load_run
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.recipe import Recipe
from x3dsearch.scores import Scores
from x3dsearch.runner import JournalScorer, path_record
from x3dsearch.runspec import ExpandSettings
from x3dsearch.runview import config_scores, frontier, group_scores
from x3dsearch.search import run_search
from x3dsearch.space import load_space
from x3dsearch.trial import TrialJob

FULL_SCHEDULE = {"name": "cpu_full", "epochs": 30, "base_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-5,
                 "warmup_epochs": 2, "batch_size": 16}
ONE_RUNG = ProxyPolicy(Recipe(name="cpu_proxy", epochs=2))
# successive halving over 1, 2, 4 epochs; every finish is a close call, so the best two get a second seed
HALVING = ProxyPolicy(Recipe(name="cpu_proxy", epochs=4), rungs=(1, 2, 4), close_call=1.0, close_call_seeds=1)


def fake_top1(config: Mapping[str, Any]) -> float:
    """Accuracy rising with cost and saturating in width, with a deterministic per-config wobble."""
    c = X3DConfig.from_dict(config)
    wobble = zlib.crc32(c.key.encode()) % 100 / 1500
    too_wide = 0.04 * max(0.0, math.log2(c.width) - 1)
    return round(0.15 + 0.07 * math.log2(count_flops(c) / 8e6) + wobble - too_wide, 4)


def _metrics(job: TrialJob, attempt: int) -> dict[str, Any]:
    config = X3DConfig.from_dict(job.config)
    if config.depth > 2 and config.frames == 1:  # the first depth candidate: a failed trial
        return {"status": "failed", "reason": "worker ran out of memory", "attempt": attempt, "seconds": 5.0,
                "cpu_seconds": 4.0}
    if config.frames == 2 and config.stride == 8 and attempt == 1:  # fast at step 1: retried once
        return {"status": "retried", "reason": "node died", "attempt": 1, "seconds": 3.0}
    top1 = fake_top1(job.config) + 0.01 * (job.stop_epochs or 0) + 0.003 * job.seed_offset
    return {"status": "ok", "top1": round(top1, 4), "top5": 0.9, "attempt": attempt,
            "seconds": 10.0 + count_flops(config) / 1e8, "cpu_seconds": 9.0 + count_flops(config) / 1e8, "node": "n1",
            "init": "inherit" if job.init == "inherit" and job.parent else "scratch"}


class _Dispatcher:
    """Answers each job like Ray would, retrying attempts marked ``retried``."""

    def run(self, jobs: list, on_trial: Callable[[TrialJob, dict[str, Any]], None]) -> None:
        for job in jobs:
            attempt = 1
            while True:
                record = _metrics(job, attempt)
                on_trial(job, record)
                if record["status"] != "retried":
                    break
                attempt += 1


CLASSES = ("fast-a", "fast-b", "slow-a", "slow-b")
GROUPS = {"fast": ("fast-a", "fast-b"), "slow": ("slow-a", "slow-b")}
# the final model's results: val 14 of 20 right (fast 9 of 10), test 11 of 20 (fast 8 of 10, slow-b 0 of 5)
FINAL_SCORES = {
    "val": Scores.from_counts("val", ((5, 0, 0, 0), (1, 4, 0, 0), (0, 0, 3, 2), (0, 0, 3, 2)), 19, CLASSES, GROUPS),
    "test": Scores.from_counts("test", ((4, 1, 0, 0), (1, 4, 0, 0), (0, 0, 3, 2), (0, 0, 5, 0)), 20, CLASSES, GROUPS)}


def make_run(root: Path, name: str = "run", target: float = 0.1, final: bool = True, cpus: float = 2.0,
             data: str | None = None, proxy: ProxyPolicy = ONE_RUNG, init: str = "scratch", ceiling: float = 2.0,
             splits: tuple[str, ...] = ("val", "test"), latency: bool = False) -> Path:
    """A finished expand run (journal, path.json, run.yaml, optional final/ and summary.json) without training.

    ``proxy`` brings its rungs and close calls; ``init="inherit"`` trains the start first and every
    candidate and the final training inherit, as ``--proxy-init inherit`` does. ``ceiling`` is in targets.
    The final metrics hold ``FINAL_SCORES`` of ``splits`` (none: metrics written before per-class results).
    With ``latency`` the target is in ms per clip, as ``--target-ms`` gives it (patch ``latency.measure``).
    """
    out = root / name
    space = load_space("x3d_kinetics")
    settings = ExpandSettings(target_gflops=None if latency else target, out=str(out), data=data, cpus_per_trial=cpus,
                              ceiling_gflops=None if latency else ceiling * target, proxy_init=init,
                              target_ms=target if latency else None)
    run = RunDir(out)
    cost = settings.budget.cost(out)
    run.create(dict(asdict(settings), cost=cost.name, space_resolved=space.to_dict(), proxy=proxy.to_dict(),
                    full=FULL_SCHEDULE), resume=False)
    view = LiveView(settings.target_gflops, space.start, 1, quiet=True, stream=io.StringIO(),
                    target_text=settings.budget.text())
    scorer = JournalScorer(run, _Dispatcher(), view, TrialJob(key="", config={}, recipe={}, data="", seed=0, init=init),
                           proxy, 384)
    steps = []
    result = run_search(space, target, scorer, cost=cost, ceiling=settings.budget.ceiling(), on_step=steps.append,
                        train_start=init == "inherit", lookahead=proxy.lookahead)
    run.write_path(path_record(result, steps, target, cost))
    if final:
        run.final_dir.mkdir()
        result.final.to_yaml(run.final_dir / "config.yaml")
        torch.save(build_model(result.final).state_dict(), run.final_dir / "model.pt")
        top1 = FINAL_SCORES["val"].top1 if "val" in splits else 0.71
        metrics = {"top1": top1, "seconds": 7200.0, **{split: FINAL_SCORES[split].to_dict() for split in splits}}
        (run.final_dir / "metrics.json").write_text(json.dumps(metrics))
        started = {"init": init, "origin_key": result.origin.key if init == "inherit" else None}
        (out / "summary.json").write_text(json.dumps({"final_metrics": dict(metrics, **started)}))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def halving_dir(tmp_path_factory) -> Path:
    """A run that inherited weights (start trained as step 0), halved over rungs and repeated close calls."""
    return make_run(tmp_path_factory.mktemp("runs"), proxy=HALVING, init="inherit")


def read_journal(run: Path) -> list[dict[str, Any]]:
    """The journal records of a run directory, in order."""
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]


def top_rung_scores(journal: list[dict[str, Any]], max_gflops: float = math.inf) -> dict[str, float]:
    """Each config's mean ok top-1 at the highest rung it reached (at most ``max_gflops``), worked out by hand."""
    rungs: dict[str, dict[int, list[float]]] = {}
    for r in journal:
        if r["status"] == "ok" and r["gflops"] <= max_gflops:
            rungs.setdefault(r["config_key"], {}).setdefault(r["rung"], []).append(r["top1"])
    return {key: sum(by[max(by)]) / len(by[max(by)]) for key, by in rungs.items()}


def test_frontier_on_hand_made_points():
    points = pd.DataFrame({"gflops": [1.0, 2.0, 2.0, 3.0, 0.5, 4.0, 5.0],
                           "top1": [0.5, 0.4, 0.6, 0.55, 0.3, math.nan, 0.7],
                           "name": list("abcdefg")})
    front = frontier(points)
    assert list(front["name"]) == ["e", "a", "c", "g"]  # b and d are dominated, f has no accuracy
    assert list(front["top1"]) == [0.3, 0.5, 0.6, 0.7]
    by_params = frontier(points.assign(params=[5, 1, 2, 3, 4, 6, 7]), cost="params")
    assert list(by_params["name"]) == ["b", "c", "g"]  # a (5 params, 0.5) is beaten by c (2, 0.6)
    assert frontier(points.iloc[:0]).empty


def test_path_matches_path_json(run_dir):
    report = run_report(run_dir)
    path = json.loads((run_dir / "path.json").read_text())
    table = report["path"]
    steps = table[table["step"] != "contract"]
    assert list(steps["axis"]) == [s["axis"] for s in path["steps"]]
    assert list(steps["gflops"]) == [s["gflops"] for s in path["steps"]]
    assert list(steps["top1"]) == [s["top1"] for s in path["steps"]]
    assert steps["seconds"].notna().all() and (steps["seconds"] > 10).all()
    first = X3DConfig.from_dict(path["steps"][0]["config"])
    assert table.iloc[0]["frames x stride"] == f"{first.frames}x{first.stride}"
    assert table.iloc[-1]["step"] == "contract" and table.iloc[-1]["axis"] == path["contraction"]["axis"]


def test_failures_and_totals(run_dir):
    report = run_report(run_dir)
    failures = report["failures"]
    assert {"failed", "retried"} <= set(failures["status"])
    assert "worker ran out of memory" in set(failures["reason"])
    journal = read_journal(run_dir)
    totals = report["totals"]
    assert totals["attempts"] == len(journal)
    retried = sum(r["status"] == "retried" for r in journal)
    assert retried >= 1 and totals["trials"] == len({r["config_key"] for r in journal}) == len(journal) - retried
    spent = sum(r["seconds"] for r in journal)
    assert totals["proxy_cpu_hours"] == pytest.approx(spent * 2.0 / 3600)
    used = sum(r.get("cpu_seconds") or 0.0 for r in journal)  # a lost node's attempt recorded none
    assert totals["proxy_cpu_hours_used"] == pytest.approx(used / 3600) and 0 < used < spent
    assert totals["proxy_attempts_without_cpu_time"] == retried
    assert totals["proxy_gpu_hours"] == 0
    assert totals["final_cpu_hours"] == pytest.approx(7200 * 2.0 / 3600)
    assert totals["final_top1"] == pytest.approx(0.55) and totals["final_split"] == "test"  # held out: test
    front = report["frontier"]
    assert front["top1"].is_monotonic_increasing and front["gflops"].is_monotonic_increasing


def test_final_compute_counts_the_final_trainings_threads_and_its_measured_cpu_time(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for file, key in ((run / "final" / "metrics.json", None), (run / "summary.json", "final_metrics")):
        data = json.loads(file.read_text())
        metrics = data[key] if key else data
        metrics.update(seconds=800.0, threads=4, world_size=2, cpu_seconds=6100.0)  # two workers of 4 threads
        file.write_text(json.dumps(data))
    totals = run_report(run)["totals"]
    assert totals["final_hours"] == pytest.approx(800 / 3600)
    assert totals["final_cpu_hours"] == pytest.approx(800 * 4 * 2 / 3600)  # not the proxy trials' 2 CPUs each
    assert totals["final_cpu_hours_used"] == pytest.approx(6100 / 3600)


def test_a_configs_compute_sums_its_trials_and_its_score_is_at_its_highest_rung(halving_dir):
    journal = read_journal(halving_dir)
    assert [r["init"] for r in journal if r["kind"] == "start"] == ["scratch"] * 3  # step 0, rungs 1, 2, 4
    assert any(r["seed_offset"] > 0 for r in journal)
    scores = config_scores(load_run(halving_dir)).set_index("config_key")
    assert set(scores.index) == {r["config_key"] for r in journal if r["status"] == "ok"}
    for key, score in scores.iterrows():
        mine = [r for r in journal if r["config_key"] == key]
        top = max(r["rung"] for r in mine if r["status"] == "ok")
        at_top = [r["top1"] for r in mine if r["status"] == "ok" and r["rung"] == top]
        assert (score["rung"], score["seeds"]) == (top, len(at_top))
        assert score["top1"] == pytest.approx(sum(at_top) / len(at_top))
        assert score["seconds"] == pytest.approx(sum(r["seconds"] for r in mine))
    report = run_report(halving_dir)
    assert report["totals"]["proxy_cpu_hours"] == pytest.approx(sum(r["seconds"] for r in journal) * 2.0 / 3600)
    assert len(report["frontier"]) == len(frontier(scores))


def test_path_gives_each_model_s_validation_top1_per_class_group_averaged_as_its_score(halving_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(halving_dir, run)
    journal = read_journal(run)
    for record in journal:  # a made-up split per record: fast = top1, slow = half of it
        if record["status"] == "ok":
            record["metrics"]["val"] = {"per_group": {"fast": record["top1"], "slow": record["top1"] / 2}}
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in journal))
    by_hand = top_rung_scores(journal)  # a close call's two seeds averaged
    groups = group_scores(load_run(run))
    assert list(groups.columns) == ["fast", "slow"]
    assert groups["fast"].to_dict() == pytest.approx(by_hand)
    assert groups["slow"].to_dict() == pytest.approx({key: top1 / 2 for key, top1 in by_hand.items()})
    table = run_report(run)["path"]
    assert list(table.columns[table.columns.get_loc("top1"):][:3]) == ["top1", "proxy fast", "proxy slow"]
    assert table["proxy fast"].tolist() == pytest.approx(table["top1"].tolist(), nan_ok=True)
    # a config one of whose averaged seeds has no group scores gets none, rather than the other seed's alone
    repeated = next(r for r in journal if r["seed_offset"] > 0)
    del repeated["metrics"]["val"]
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in journal))
    groups = group_scores(load_run(run))
    assert math.isnan(groups.loc[repeated["config_key"], "fast"])
    assert groups["fast"].notna().sum() == len(by_hand) - 1
    # without per-group scores in the journal (data without groups) the path has no such columns
    assert not any(c.startswith("proxy ") for c in run_report(halving_dir)["path"].columns)
    assert group_scores(load_run(halving_dir)).empty


def test_path_says_how_each_score_was_obtained(halving_dir):
    journal = read_journal(halving_dir)
    table = run_report(halving_dir)["path"].set_index("step")
    assert (table.loc["0", "axis"], table.loc["0", "init"], table.loc["0", "rung"]) == ("start", "scratch", 4)
    for step in json.loads((halving_dir / "path.json").read_text())["steps"]:
        row = table.loc[str(step["step"])]
        chosen = next(c for c in step["candidates"] if c["config_key"] == step["config_key"])
        mine = [r for r in journal if r["config_key"] == step["config_key"]]
        assert len({r["rung"] for r in mine}) == 3  # trained on through rungs 1, 2 and 4
        assert (row["init"], row["rung"], row["seeds"]) == ("inherit", 4, chosen["seeds"])
        assert row["seconds"] == pytest.approx(sum(r["seconds"] for r in mine))
    assert (table["seeds"] == 2).any()  # a close call averaged two seeds


def test_report_header_names_the_proxy_mechanism(halving_dir, run_dir):
    report = run_report(halving_dir)
    text = render(report)
    assert text.startswith("proxy: schedule cpu_proxy (4 epochs); weights inherited along the path (")
    assert "successive halving over rungs of 1, 2, 4 epochs keeping 50% (" in text
    assert "re-trained with 1 more seed (" in text
    origin = json.loads((halving_dir / "summary.json").read_text())["final_metrics"]["origin_key"]
    path = json.loads((halving_dir / "path.json").read_text())
    step = next(s for s in path["steps"] if s["config_key"] == origin)
    assert f"\nfinal: trained from the inherited proxy weights of step {step['step']} ({step['axis']}, " in text
    search = json.loads(render(report, "json"))["search"]
    journal = read_journal(halving_dir)
    assert (search["proxy_init"], search["rungs"], search["final_origin_key"]) == ("inherit", "1, 2, 4", origin)
    assert search["seed_repeats"] == sum(r["seed_offset"] > 0 and r["status"] == "ok" for r in journal)
    assert search["configs_from_scratch"] == 1 and search["configs_stopped_early"] > 0
    assert "## path" in render(report, "markdown") and "proxy: schedule" in render(report, "markdown")
    plain = render(run_report(run_dir))
    assert "every candidate trained from scratch" in plain and "halving" not in plain
    assert "\nfinal: trained from scratch\n" in plain


def test_inherit_mode_without_a_parent_is_reported_as_scratch(tmp_path):
    run = make_run(tmp_path, init="inherit", final=False)
    lines = (run / "journal.jsonl").read_text().splitlines()
    inherited = {r["config_key"] for r in map(json.loads, lines) if r.get("init") == "inherit"}
    (run / "journal.jsonl").write_text("".join(line.replace('"inherit"', '"scratch: parent weights missing"') + "\n"
                                               for line in lines))
    assert f"; every candidate trained from scratch ({len(inherited)} as a fallback)" in render(run_report(run))


def test_skipped_candidates_are_listed(tmp_path):
    run = make_run(tmp_path, target=0.3, final=False, ceiling=1.8)  # width stops at 4, below 2x the target
    skipped = run_report(run)["failures"].query("status == 'skipped'")
    path = json.loads((run / "path.json").read_text())
    expected = [c for s in path["steps"] for c in s["candidates"] if c["status"] == "skipped"]
    assert len(skipped) == len(expected) > 0
    assert skipped["reason"].str.contains("above the ceiling").all()
    assert run_report(run)["totals"]["final_top1"] is None


def test_formats(run_dir, capsys):
    report = run_report(run_dir)
    csv = pd.read_csv(io.StringIO(render(report, "csv")))
    assert set(csv["section"]) == {"search", "path", "box", "frontier", "failures", "final", "totals"}
    assert (csv["section"] == "path").sum() == len(report["path"])
    data = json.loads(render(report, "json"))
    assert data["totals"]["attempts"] == report["totals"]["attempts"]
    assert data["search"]["proxy_init"] == "scratch" and data["search"]["rungs"] is None
    assert len(data["path"]) == len(report["path"])
    markdown = render(report, "markdown")
    assert "## path" in markdown and "| step | axis | frames x stride |" in markdown
    assert "|---|" in markdown
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "frontier" in out and "totals" in out and "proxy_cpu_hours" in out


def test_final_model_per_group_on_val_and_test_and_per_class_on_request(run_dir, capsys):
    report = run_report(run_dir)
    final = report["final"]
    assert list(final["name"]) == ["all", "fast", "slow"]
    assert final["test top1"].tolist() == pytest.approx([11 / 20, 8 / 10, 3 / 10])
    assert final["val top1"].tolist() == pytest.approx([14 / 20, 9 / 10, 5 / 10])
    assert report["totals"]["final_top1"] == pytest.approx(11 / 20) and report["totals"]["final_split"] == "test"
    assert report["totals"]["final_val_top1"] == pytest.approx(0.7)  # the metrics' own top1 field: val's
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "final: top-1 55.0% on the held-out test split (20 videos); 70.0% on val, the split the search " \
        "selected on" in out
    section = out.split("\nfinal\n", 1)[1].split("\n\n")[0].splitlines()[1:]  # below the column names
    rows = {line.split()[0]: line.split()[1:] for line in section}
    assert rows == {"all": ["70.0%", "20", "55.0%", "20"], "fast": ["90.0%", "10", "80.0%", "10"],
                    "slow": ["50.0%", "10", "30.0%", "10"]}
    assert main(["report", str(run_dir), "--per-class"]) == 0
    assert "    slow-b     40.0%           5       0.0%            5" in capsys.readouterr().out
    data = json.loads(render(run_report(run_dir, per_class=True), "json"))
    assert [r["name"] for r in data["final"]] == ["all", "fast", "fast-a", "fast-b", "slow", "slow-a", "slow-b"]


@pytest.mark.parametrize("splits, top1, why", [(("val",), "70.0%", "the data has no test.csv"),
                                               ((), "71.0%", "its metrics predate test splits")])
def test_without_a_test_split_the_report_says_the_number_is_on_the_selection_split(tmp_path, splits, top1, why,
                                                                                   capsys):
    run = make_run(tmp_path, splits=splits)
    assert run_report(run)["totals"]["final_split"] == "val"
    assert main(["report", str(run)]) == 0
    assert f"final: top-1 {top1} on val, the split the search selected on ({why}): not a held-out number" \
        in capsys.readouterr().out


def test_report_of_a_non_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a run directory" in err


def test_header_gives_the_epoch_range_of_a_proxy_with_epochs_by_step_cost():
    prov = {"proxy_schedule": "cpu_proxy", "proxy_epochs": 1, "step_compute": 768.0, "epoch_range": [1, 2],
            "proxy_init": "inherit", "configs_inherited": 51, "configs_from_scratch": 1, "scratch_fallbacks": 0}
    assert describe_provenance(prov)[0] == ("proxy: schedule cpu_proxy (1-2 epochs by step cost, step_compute 768 "
                                            "GFLOP-clips); weights inherited along the path (51 configs inherited, "
                                            "1 from scratch)")
    tiny = {**prov, "epochs_under": [[0.02, 16]], "epoch_range": [1, 16]}
    assert describe_provenance(tiny)[0].startswith(
        "proxy: schedule cpu_proxy (1-16 epochs by step cost, 16 under 0.02 GFLOPs, step_compute 768 GFLOP-clips);")
    by_nll = {**prov, "rank_by": "nll", "close_call": 0.02, "close_call_seeds": 1, "seed_repeats": 3}
    assert describe_provenance(by_nll)[0].endswith(
        "; candidates ranked by their val NLL (lower wins), not top-1; close calls (val NLL within 0.02) re-trained "
        "with 1 more seed (3 repeats)")
    lean = {**prov, "fewer_params_within": 0.02}
    assert describe_provenance(lean)[0].endswith(
        "; candidates within 0.02 top-1 of the best tied, the fewest parameters won")
    assert describe_provenance({**lean, "longer_window_ties": True})[0].endswith(
        "; candidates within 0.02 top-1 of the best tied, the fewest parameters won, then the longer window "
        "(temporal over fast)")


def test_header_reads_the_epoch_rules_from_the_runs_own_schedule_and_survives_a_foreign_one(tmp_path):
    proxy = ProxyPolicy(Recipe(name="cpu_proxy", epochs=1), step_compute=768.0, max_epochs=2,
                        epochs_under=((0.02, 16),))
    run = make_run(tmp_path / "a", proxy=proxy, final=False)
    assert render(run_report(run)).startswith(
        "proxy: schedule cpu_proxy (1-16 epochs by step cost, 16 under 0.02 GFLOPs, step_compute 768 GFLOP-clips);")
    settings = yaml.safe_load((run / "run.yaml").read_text())
    settings["proxy"]["a_field_from_another_version"] = 1
    (run / "run.yaml").write_text(yaml.safe_dump(settings))
    assert render(run_report(run)).startswith("proxy: schedule cpu_proxy (1 epochs);")


def test_the_box_section_names_axes_the_bounds_cut_or_left_out(tmp_path):
    run = make_run(tmp_path, target=0.3, final=False)  # two width steps take width to its bound, 4
    box = run_report(run)["box"]
    path = json.loads((run / "path.json").read_text())
    assert path["steps"][1]["config"]["width"] == 4.0
    after = box[box["step"] > 2]
    assert (after.query("axis == 'width'")["note"] == "not offered: at its bound (width <= 4)").all()
    assert len(after.query("axis == 'width'")) == len(path["steps"]) - 2
    assert "box" in render(run_report(run), "table")


def test_provenance_names_the_look_ahead_only_when_one_was_taken(tmp_path, run_dir):
    looked = make_run(tmp_path, proxy=ONE_RUNG.replace(lookahead=True), final=False)
    assert "lookahead" in {r["kind"] for r in read_journal(looked)}
    assert run_report(looked)["search"]["lookahead"] is True
    assert any("best two took the next step" in line for line in describe_provenance(run_report(looked)["search"]))
    said = tmp_path / "said"  # a schedule with lookahead whose run took no look (e.g. `x3dsearch step`)
    shutil.copytree(run_dir, said)
    settings = yaml.safe_load((said / "run.yaml").read_text())
    settings["proxy"]["lookahead"] = True
    (said / "run.yaml").write_text(yaml.safe_dump(settings))
    assert "lookahead" not in run_report(said)["search"]


def test_provenance_carries_the_tie_rules_a_run_recorded(tmp_path, run_dir):
    ruled = tmp_path / "ruled"
    shutil.copytree(run_dir, ruled)
    settings = yaml.safe_load((ruled / "run.yaml").read_text())
    settings["proxy"].update(fewer_params_within=0.02, longer_window_ties=True)
    (ruled / "run.yaml").write_text(yaml.safe_dump(settings))
    search = run_report(ruled)["search"]
    assert (search["fewer_params_within"], search["longer_window_ties"]) == (0.02, True)
    assert describe_provenance(search)[0].endswith("the fewest parameters won, then the longer window (temporal over fast)")
