"""Latency as the search's cost: a fake deterministic timer, each network timed once, searching under it."""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import pytest

from x3dsearch import latency
from x3dsearch.config import X3DConfig, preset
from x3dsearch.cost import FLOPS, count_flops
from x3dsearch.runview import config_scores
from x3dsearch.latency import LatencyCost, LatencyTable, Timing, features, latency_cost, network_key
from x3dsearch.search import LANDING_TOLERANCE, Outcome, choose, run_search, step_candidates
from x3dsearch.space import load_space

SPACE = load_space()
# ms per pointwise GMAC, per channelwise GMAC, per residual block, and fixed: channelwise convs cost 12x more
TRUTH = np.array([30.0, 370.0, 0.05, 1.0])


def fake_ms(config: X3DConfig) -> float:
    """The fake timer's latency: linear in :func:`features`, so the predictor can recover it exactly."""
    return float(features(config) @ TRUTH)


class FakeTimer:
    """Stands in for :func:`x3dsearch.latency.measure`: deterministic, and counts what it times."""

    def __init__(self) -> None:
        self.timed: list[X3DConfig] = []

    def __call__(self, config: X3DConfig, *, device: str = "cpu", batch: int = 1, threads: int = 1,
                 repeats: int = 10, reference: Timing | None = None) -> Timing:
        self.timed.append(config)
        ms = fake_ms(config)
        scaled = {} if reference is None else {"reference_ms": reference.ms, "raw_ms": ms}
        return Timing(config.key, device, latency.device_name(device), batch, threads, ms, 0.9 * ms, 1.2 * ms,
                      repeats, 0.95 * ms, 1.05 * ms, **scaled)


@pytest.fixture
def timer(tmp_path, monkeypatch: pytest.MonkeyPatch) -> FakeTimer:
    """The fake timer in place of measure(), and the cache folder (its latency.csv) in ``tmp_path/cache``."""
    fake = FakeTimer()
    monkeypatch.setattr(latency, "measure", fake)
    monkeypatch.setenv("X3DSEARCH_CACHE", str(tmp_path / "cache"))
    return fake


def _score(candidates):
    """Proxy top-1 by a deterministic hash of the config: no preference for cheap or costly models."""
    return {c.key: Outcome("ok", top1=zlib.crc32(c.key.encode()) / 2 ** 32) for c in candidates}


def test_flops_is_the_default_cost_and_the_same_search() -> None:
    assert FLOPS.of(preset("XS")) == FLOPS.estimate(preset("XS")) == count_flops(preset("XS"))
    assert (FLOPS.name, FLOPS.unit, FLOPS.per_unit) == ("flops", "GFLOPs", 1e9)
    plain, costed = run_search(SPACE, 0.3, _score), run_search(SPACE, 0.3, _score, cost=FLOPS)
    assert [s.chosen.key for s in plain.steps] == [s.chosen.key for s in costed.steps]
    assert plain.final == costed.final and plain.contraction == costed.contraction and plain.cost is FLOPS


def test_each_network_is_timed_once_and_kept_in_the_run_and_cache_tables(tmp_path, timer: FakeTimer) -> None:
    cost = latency_cost(tmp_path / "run")
    xs = preset("XS", num_classes=12)
    assert cost.of(xs) == cost.of(xs) == pytest.approx(fake_ms(xs))
    assert cost.of(xs.replace(stride=2)) == cost.of(xs)  # another stride samples the video, same network
    ref = latency.REFERENCE  # the calibration, timed first
    assert timer.timed == [ref, xs] and network_key(xs.replace(stride=2)) == network_key(xs)
    assert [t.x3d for t in LatencyTable(tmp_path / "run" / latency.TABLE_NAME).rows()] == [ref, xs]
    assert [t.x3d for t in LatencyTable().rows()] == [ref, xs]
    # a resumed run reads its own table; another run finds the timings in the cache and keeps a copy
    assert latency_cost(tmp_path / "run").of(xs) == cost.of(xs)
    assert latency_cost(tmp_path / "other").of(xs) == cost.of(xs) and timer.timed == [ref, xs]
    # with the calibration its copy is scaled to, first
    assert [t.x3d for t in LatencyTable(tmp_path / "other" / latency.TABLE_NAME).rows()] == [ref, xs]


def test_a_run_keeps_one_scale_when_the_cache_is_calibrated_again(tmp_path, timer: FakeTimer) -> None:
    """A cache calibrated again after a run began: the run reads the cache's newer timings on its own scale."""
    ref, a, b = latency.REFERENCE, preset("XS", num_classes=12), preset("S", num_classes=12)
    run = latency_cost(tmp_path / "run")
    ms_a = run.of(a)  # the run and the cache calibrate at fake_ms(ref)
    slower = dataclasses.replace(run.timing(ref), ms=2 * fake_ms(ref), reference_ms=2 * fake_ms(ref))
    LatencyTable().add(slower)  # the cache calibrated again, twice as slow
    LatencyTable().add(dataclasses.replace(timer(b, reference=slower), ms=2 * fake_ms(b),
                                           reference_ms=slower.ms))  # b timed on the new scale
    resumed = latency_cost(tmp_path / "run")
    assert resumed.of(a) == ms_a and resumed.of(b) == pytest.approx(fake_ms(b))  # on the run's scale
    again = latency_cost(tmp_path / "run")  # the copy of b in the run's table reads back the same
    assert again.of(b) == pytest.approx(resumed.of(b)) and again.of(ref) == fake_ms(ref)


def test_estimate_measures_until_twelve_are_timed_then_predicts(tmp_path, timer: FakeTimer) -> None:
    cost = latency_cost(tmp_path / "run")
    rng = np.random.default_rng(0)
    configs = [preset("X2D", num_classes=12, frames=int(rng.integers(1, 9)), width=float(rng.uniform(1, 3)),
                      bottleneck=float(rng.uniform(1, 3)), depth=float(rng.uniform(1, 3))) for _ in range(11)]
    for config in configs:
        assert cost.estimate(config) == pytest.approx(fake_ms(config))
    assert timer.timed == [latency.REFERENCE, *configs]  # twelve timings with the calibration
    unseen = preset("L", num_classes=12)
    assert cost.estimate(unseen) == pytest.approx(fake_ms(unseen), rel=1e-6)  # exact data: the model is TRUTH
    assert timer.timed == [latency.REFERENCE, *configs]


def test_ties_go_to_the_faster_config_not_the_one_with_fewer_flops(tmp_path, timer: FakeTimer) -> None:
    cost = latency_cost(tmp_path / "run")
    candidates = step_candidates(preset("X2D", num_classes=12), SPACE, 1)  # depth: fewest FLOPs, most blocks
    tie = {c.key: Outcome("ok", top1=0.5) for c in candidates}
    by_flops, by_ms = choose(candidates, tie), choose(candidates, tie, cost)
    assert by_ms.config == min((c.config for c in candidates), key=fake_ms)
    assert by_flops.config == min((c.config for c in candidates), key=count_flops) and by_ms != by_flops


@pytest.mark.parametrize("evaluate", [False, True])
def test_a_search_under_latency_lands_on_the_target_in_ms(tmp_path, timer: FakeTimer, evaluate: bool) -> None:
    cost = latency_cost(tmp_path / "run")
    target = 40.0
    result = run_search(SPACE, target, _score, cost=cost, land_within=2 ** 0.5, evaluate_contractions=evaluate,
                        ceiling=2 * target)
    assert abs(cost.of(result.final) - target) <= LANDING_TOLERANCE * target
    assert result.target == target and result.contraction.target == target and result.cost is cost
    for step in result.steps:  # every candidate costed in ms: over the ceiling means over 80 ms, not 80 GFLOPs
        for c in step.candidates:
            assert (step.outcomes[c.key].status == "skipped") == (fake_ms(c.config) > 2 * target)
    networks = [network_key(c) for c in timer.timed]
    assert len(networks) == len(set(networks))  # memoised: no network timed twice


def test_a_target_under_the_start_or_out_of_reach_is_one_line(tmp_path, timer: FakeTimer) -> None:
    from x3dsearch.errors import ConfigError, SearchError

    cost = latency_cost(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"target 0.5 ms is not above the start's cost"):
        run_search(SPACE, 0.5, _score, cost=cost)
    with pytest.raises(SearchError, match=r"target 1e\+09 ms is out of reach"):
        run_search(SPACE, 1e9, _score, cost=cost)


def test_latency_cost_is_frozen_and_says_its_unit(tmp_path, timer: FakeTimer) -> None:
    cost = LatencyCost((LatencyTable(tmp_path / "t.csv"),), threads=2)
    assert (cost.name, cost.unit, cost.per_unit, cost.threads) == ("latency", "ms", 1.0, 2)
    with pytest.raises(AttributeError):
        cost.device = "cuda"  # type: ignore[misc]


@pytest.fixture
def latency_run(tmp_path, timer: FakeTimer):
    """A finished expand run under a 40-ms target, costed by the fake timer (see test_report.make_run)."""
    from test_report import make_run

    return make_run(tmp_path, "lat", target=40.0, latency=True)


def test_run_yaml_and_path_record_the_cost(latency_run) -> None:
    import json

    import yaml

    settings = yaml.safe_load((latency_run / "run.yaml").read_text())
    assert (settings["cost"], settings["target_ms"], settings["target_gflops"]) == ("latency", 40.0, None)
    path = json.loads((latency_run / "path.json").read_text())
    final = X3DConfig.from_dict(path["final"]["config"])
    assert path["target_ms"] == 40.0 and "target_gflops" not in path
    assert path["final"]["ms"] == pytest.approx(fake_ms(final))
    assert abs(path["final"]["ms"] - 40.0) <= LANDING_TOLERANCE * 40.0


def test_report_shows_measured_ms_beside_gflops(latency_run) -> None:
    from x3dsearch.report import render, run_report

    report = run_report(latency_run)
    for name in ("path", "frontier"):
        table = report[name]
        columns = list(table.columns)
        assert columns[columns.index("gflops") + 1] == "ms"
    path = report["path"]
    assert path["ms"].iloc[-1] == pytest.approx(fake_ms(X3DConfig.from_dict(
        __import__("json").loads((latency_run / "path.json").read_text())["final"]["config"])))
    assert path["ms"].notna().all()  # the contraction too: landing timed it
    front = report["frontier"]
    assert list(front["ms"]) == sorted(front["ms"]) and list(front["top1"]) == sorted(front["top1"])
    assert report["totals"]["target_ms"] == 40.0 and report["totals"]["latency_device"] == "cpu"
    assert "ms" in render(report, "markdown").split("## path")[1].splitlines()[2]


def test_plot_of_a_latency_run_has_an_ms_axis_and_gflops_beside(latency_run, tmp_path) -> None:
    from x3dsearch.errors import UserError
    from x3dsearch.plot import plot_runs, save_plot
    from test_report import make_run

    fig = plot_runs([latency_run])  # latency-costed: ms by default
    ms_ax, gflops_ax = fig.axes
    assert "GFLOPs" in gflops_ax.get_xlabel() and "ms per clip" in ms_ax.get_xlabel() and "40 ms per clip" in ms_ax.get_title()
    target, = [a for a in ms_ax.get_children() if a.get_gid() == "target:40"]
    assert target.get_xdata()[0] == 40.0
    assert not [a for a in ms_ax.get_children() if str(a.get_gid()).startswith("preset:")]
    assert [a for a in gflops_ax.get_children() if str(a.get_gid()).startswith("preset:")]
    assert save_plot([latency_run], tmp_path / "lat.png").stat().st_size > 20_000
    flops_run = make_run(tmp_path, "flops", target=0.1, final=False)
    assert len(plot_runs([flops_run]).axes) == 1  # FLOP-costed: one panel in GFLOPs
    with pytest.raises(UserError, match="not searched under latency"):
        plot_runs([flops_run], metric="ms")


def test_export_records_the_latency_and_its_device(latency_run, tmp_path) -> None:
    import yaml

    from x3dsearch.cli import main

    out = tmp_path / "found.yaml"
    assert main(["export", str(latency_run), "--format", "x3dsearch", "-o", str(out)]) == 0
    text = out.read_text()
    data = yaml.safe_load(text)
    found = X3DConfig.from_dict(data["model"])
    assert data["search"]["latency_ms"] == pytest.approx(fake_ms(found))
    assert (data["search"]["latency_device"], data["search"]["latency_batch"]) == ("cpu", 1)
    assert data["search"]["latency_device_name"] == latency.device_name()
    assert f"{fake_ms(found):.4g} ms per clip measured on {latency.device_name()} (cpu, batch 1, 1 thread)" in text


@pytest.mark.parametrize("args, message", [
    (["--target-ms", "0"], "--target-ms must be positive"),
    (["--target-ms", "20", "--ceiling-gflops", "1"], "--ceiling-gflops is a FLOP ceiling"),
    (["--target-ms", "20", "--latency-threads", "0"], "--latency-batch and --latency-threads must be positive"),
    (["--target-ms", "1"], "target 1 ms is not above the start's cost"),
])
def test_cli_refuses_a_bad_latency_target_in_one_line(tmp_path, timer: FakeTimer, capsys, args, message) -> None:
    from x3dsearch.cli import main

    assert main(["expand", *args, "-o", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "run").exists()


def test_cli_takes_one_target_kind(tmp_path, capsys) -> None:
    from x3dsearch.cli import main

    with pytest.raises(SystemExit):
        main(["expand", "--target-gflops", "1", "--target-ms", "20", "--dry-run"])
    assert "--target-ms: not allowed with argument --target-gflops" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["expand"], ["search", "--trials", "3"]])
def test_dry_run_plans_under_a_latency_target(tmp_path, timer: FakeTimer, capsys, command) -> None:
    from x3dsearch.cli import main

    assert main([*command, "--target-ms", "40", "-o", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("target 40 ms, ceiling 80 ms" in out if command == ["expand"] else
            "proxy trainings at <= 40 ms per clip (cpu, batch 1, 1 thread)" in out)
    assert timer.timed and not (tmp_path / "run").exists()  # timed into the cache, not into a run directory
    assert len(LatencyTable().rows()) == len(timer.timed)


def test_compare_ranks_latency_runs_under_their_ms_target_or_a_flop_budget(latency_run, tmp_path) -> None:
    from test_report import make_run

    from x3dsearch.compare import compare_runs
    from x3dsearch.errors import UserError
    from x3dsearch.rundir import load_run

    ms, _ = compare_runs([latency_run], out=tmp_path / "c.png")  # the run's own 40-ms target
    scores = config_scores(load_run(latency_run))
    under = [top1 for key, top1 in zip(scores["config_key"], scores["top1"])
             if fake_ms(X3DConfig.from_dict(json.loads(key))) <= 40.0 * 1.01]
    assert ms["best_top1_final"].iloc[0] == pytest.approx(max(under))
    tight, _ = compare_runs([latency_run], out=tmp_path / "c.png", target_ms=5.0)
    assert tight["best_top1_final"].iloc[0] < ms["best_top1_final"].iloc[0]
    flops, _ = compare_runs([latency_run], out=tmp_path / "c.png", target_gflops=1.0)
    assert len(flops) == 1
    flop_run = make_run(tmp_path, "flops", target=0.1)
    with pytest.raises(UserError, match="searched under latency and the others under FLOPs"):
        compare_runs([latency_run, flop_run], out=tmp_path / "c.png")
    with pytest.raises(UserError, match="flops was not searched under latency"):
        compare_runs([latency_run, flop_run], out=tmp_path / "c.png", target_ms=40.0)
    mixed, _ = compare_runs([latency_run, flop_run], out=tmp_path / "c.png", target_gflops=0.1)
    assert list(mixed["run"]) == ["lat", "flops"] and set(mixed["budget"]) == {"0.1 GFLOPs"}
    assert list(ms["budget"]) == ["40 ms per clip"]


def test_compare_refuses_latency_runs_timed_on_other_nodes(latency_run, tmp_path) -> None:
    import shutil

    import yaml

    from x3dsearch.compare import compare_runs
    from x3dsearch.errors import UserError

    other = tmp_path / "on-node"
    shutil.copytree(latency_run, other)
    settings = yaml.safe_load((other / "run.yaml").read_text())
    (other / "run.yaml").write_text(yaml.safe_dump(dict(settings, latency_node="jetson")))
    with pytest.raises(UserError, match="timed latency differently"):
        compare_runs([latency_run, other], out=tmp_path / "c.png")
    recalibrated = tmp_path / "recalibrated"
    shutil.copytree(latency_run, recalibrated)
    table = LatencyTable(recalibrated / latency.TABLE_NAME)
    (calibration,) = [t for t in table.rows() if t.x3d == latency.REFERENCE]
    table.add(dataclasses.replace(calibration, ms=2 * calibration.ms, reference_ms=2 * calibration.ms))
    with pytest.raises(UserError, match="calibration of the reference network"):
        compare_runs([latency_run, recalibrated], out=tmp_path / "c.png")
    assert len(compare_runs([latency_run, latency_run], out=tmp_path / "c.png")[0]) == 2


def test_a_latency_target_comes_without_a_flop_target_or_ceiling(tmp_path) -> None:
    from x3dsearch.errors import UserError
    from x3dsearch.runner import ExpandSettings

    for extra in ({"target_gflops": 1.0}, {"ceiling_gflops": 4.0}):
        with pytest.raises(UserError, match="comes alone"):
            ExpandSettings(out=str(tmp_path / "run"), target_ms=20.0, **{"target_gflops": None, **extra})


def test_latency_options_need_a_latency_target(tmp_path, capsys) -> None:
    from x3dsearch.cli import main

    code = main(["expand", "--target-gflops", "1", "--latency-node", "jetson", "--latency-threads", "2",
                 "-o", str(tmp_path / "run"), "--dry-run"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("x3dsearch expand: error: --latency-threads, --latency-node only "
                                               "apply with --target-ms (a latency budget)")


def test_a_run_from_before_latency_nodes_does_not_resume_on_a_node(tmp_path) -> None:
    from dataclasses import asdict

    from x3dsearch.errors import UserError
    from x3dsearch.rundir import RunDir
    from x3dsearch.runner import ExpandSettings

    settings = ExpandSettings(target_gflops=None, out=str(tmp_path / "run"), target_ms=20.0)
    recorded = {k: v for k, v in asdict(settings).items() if k != "latency_node"}  # a run.yaml of the latency branch
    run = RunDir(settings.out)
    run.create(dict(recorded, cost="latency"), resume=False)
    run.create(dict(asdict(settings), cost="latency"), resume=True)
    with pytest.raises(UserError, match="--resume with different latency_node"):
        run.create(dict(asdict(settings), cost="latency", latency_node="jetson"), resume=True)


def test_report_names_the_ceiling_in_the_targets_unit() -> None:
    from x3dsearch.runview import ceiling_text

    assert ceiling_text({"target_ms": 20.0, "target_gflops": None}) == "40 ms"
    assert ceiling_text({"target_gflops": 0.1}) == "0.2 GFLOPs"
    assert ceiling_text({"ceiling_gflops": 0.3}) == "0.3 GFLOPs"


def test_a_resume_keeps_the_cost_kind_and_the_latency_settings(tmp_path) -> None:
    from dataclasses import asdict, replace

    from x3dsearch.errors import UserError
    from x3dsearch.rundir import RunDir
    from x3dsearch.runspec import ExpandSettings

    latency_run = ExpandSettings(target_gflops=None, out=str(tmp_path / "run"), target_ms=20.0)
    run = RunDir(latency_run.out)
    run.create(dict(asdict(latency_run), cost="latency"), resume=False)
    run.create(dict(asdict(latency_run), cost="latency"), resume=True)  # the same settings resume
    for changed, cost in ((replace(latency_run, target_ms=None, target_gflops=0.05), "flops"),
                          (replace(latency_run, latency_threads=2), "latency")):
        with pytest.raises(UserError, match="--resume with different"):
            run.create(dict(asdict(changed), cost=cost), resume=True)
