"""Measured latency: timing with a fake clock, the per-machine table, the predictor, one real timing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from x3dsearch import latency
from x3dsearch.config import preset
from x3dsearch.errors import ConfigError
from x3dsearch.latency import LatencyModel, LatencyTable, Timing, features, fit, held_out_errors, measure

TINY = preset("X2D", num_classes=4, crop=32, head_width=32)


def _clock(durations_s: list[float]):
    """A clock whose successive (start, stop) readings are ``durations_s`` apart."""
    readings = itertools.chain.from_iterable((0.0, d) for d in durations_s)
    return lambda: next(readings)


def test_measure_reports_the_median_per_clip_and_its_range() -> None:
    timing = measure(TINY, batch=2, warmup=1, repeats=5, clock=_clock([0.010, 0.030, 0.020, 0.012, 0.060]))
    assert (timing.ms, timing.fastest_ms, timing.slowest_ms) == pytest.approx((10.0, 5.0, 30.0))
    assert (timing.q1_ms, timing.q3_ms) == pytest.approx((6.0, 15.0))  # per clip: 5, 6, 10, 15, 30
    assert timing.spread == pytest.approx(0.45) and timing.repeats == 5 and timing.batch == 2
    assert timing.x3d == TINY and timing.device == "cpu" and timing.device_name == latency.device_name()


def test_measure_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="device"):
        measure(TINY, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no GPU"):
            latency.device_name("cuda")
    with pytest.raises(ConfigError, match="positive"):
        measure(TINY, batch=0)


def test_one_real_timing_is_positive_and_ordered() -> None:
    timing = measure(TINY, warmup=1, repeats=3)
    assert 0 < timing.fastest_ms <= timing.ms <= timing.slowest_ms


def _timing(config, ms: float, batch: int = 1, threads: int = 1, reference_ms: float = 40.0) -> Timing:
    """A timing of ``config`` scaled to a calibration of the reference at ``reference_ms`` (NaN: unscaled)."""
    return Timing(config.key, "cpu", latency.device_name(), batch, threads, ms, ms * 0.9, ms * 1.1, 5, ms * 0.95,
                  ms * 1.05, reference_ms, ms)


def _stored(table: LatencyTable, config, **options) -> Timing | None:
    """``config``'s timing among the table's timings with ``options`` (batch, threads), if any."""
    return next((t for t in table.timings(**options) if t.config == config.key), None)


def test_table_keeps_timings_per_config_batch_and_threads(tmp_path) -> None:
    table = LatencyTable(tmp_path / "latency.csv")
    assert _stored(table, TINY) is None
    table.add(_timing(TINY, 3.0))
    table.add(_timing(TINY, 9.0, batch=4))
    table.add(_timing(TINY, 2.5))  # a re-timing replaces the older one
    with table.path.open("a") as handle:
        handle.write('"{""cut')  # a line cut short by a crash
    assert _stored(table, TINY).ms == 2.5 and _stored(table, TINY, batch=4).ms == 9.0
    assert _stored(table, TINY, threads=2) is None and len(table.timings()) == 1


def test_each_config_is_timed_once_against_the_reference_timed_first(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(config, repeats=10, reference=None, **kw):
        calls.append((config, repeats, reference))
        return _timing(config, 40.0 if reference is None else 4.0, reference_ms=math.nan if reference is None
                       else reference.ms)

    monkeypatch.setattr(latency, "measure", fake)
    table = LatencyTable(tmp_path / "latency.csv")
    cost = latency.LatencyCost((table,))
    first, second = cost.timing(TINY), cost.timing(TINY)
    calibration = _stored(table, latency.REFERENCE)
    assert first == second and [(c, r) for c, r, _ in calls] == [(latency.REFERENCE, 50), (TINY, 10)]
    assert calls[1][2].config == calibration.config and first.reference_ms == calibration.ms == 40.0
    assert _stored(LatencyTable(tmp_path / "latency.csv"), TINY).ms == 4.0
    cost.timing(TINY, fresh=True)  # timed again, against the stored calibration
    assert [c for c, _, _ in calls] == [latency.REFERENCE, TINY, TINY]
    cost.timing(latency.REFERENCE.replace(stride=3), fresh=True)  # the reference's network: a new calibration
    assert calls[-1][:2] == (latency.REFERENCE, 50)


def test_timings_follow_the_latest_calibration_and_leave_out_unscaled_ones(tmp_path) -> None:
    table = LatencyTable(tmp_path / "latency.csv")
    other = TINY.replace(crop=48)
    table.add(_timing(latency.REFERENCE, 30.0, reference_ms=math.nan))  # an unscaled XS: not a calibration
    assert table.timings() == []
    table.add(_timing(latency.REFERENCE, 40.0, reference_ms=40.0))  # a calibration is scaled to itself
    table.add(_timing(TINY, 4.0, reference_ms=40.0))
    table.add(_timing(other, 6.0, reference_ms=math.nan))  # from before timings were scaled
    assert {t.config: t.ms for t in table.timings()} == {latency.REFERENCE.key: 40.0, TINY.key: 4.0}
    table.add(_timing(latency.REFERENCE, 50.0, reference_ms=50.0))  # a new calibration: 25% slower
    rescaled = {t.config: t for t in table.timings()}
    assert rescaled[TINY.key].ms == pytest.approx(5.0) and rescaled[TINY.key].reference_ms == 50.0


def test_a_table_with_older_columns_is_rewritten_before_a_row_is_added(tmp_path) -> None:
    path = tmp_path / "latency.csv"
    old = _timing(TINY, 4.0)
    columns = ["config", "device", "device_name", "batch", "threads", "ms", "fastest_ms", "slowest_ms", "repeats",
               "q1_ms", "q3_ms"]
    path.write_text(",".join(columns) + "\n" + ",".join(f'"{v}"' if k == "config" else str(v) for k, v in
                    ((k, getattr(old, k).replace('"', '""') if k == "config" else getattr(old, k))
                     for k in columns)) + "\n")
    table = LatencyTable(path)
    (read,) = table.rows()
    assert read.ms == 4.0 and math.isnan(read.reference_ms)
    table.add(_timing(latency.REFERENCE, 40.0, reference_ms=math.nan))
    assert path.read_text().splitlines()[0].split(",")[-2:] == ["reference_ms", "raw_ms"]
    assert [t.ms for t in LatencyTable(path).rows()] == [4.0, 40.0]
    with path.open("a") as handle:  # a line cut short inside the new columns is no timing
        handle.write(path.read_text().splitlines()[-1].rsplit(",", 2)[0] + ",4\n")
    assert [t.ms for t in LatencyTable(path).rows()] == [4.0, 40.0]


def _configs(n: int) -> list:
    rng = np.random.default_rng(0)
    return [preset("X2D").replace(frames=int(rng.integers(1, 17)), crop=int(rng.choice([112, 160, 224])),
                                  width=float(rng.uniform(1, 3)), bottleneck=float(rng.uniform(1, 3)),
                                  depth=float(rng.uniform(1, 3))) for _ in range(n)]


def test_fit_recovers_a_linear_latency_and_predicts_held_out_configs() -> None:
    truth = np.array([2.0, 30.0, 0.4, 1.5])  # ms per pointwise GMAC, per channelwise GMAC, per block, fixed
    timings = [_timing(c, float(features(c) @ truth)) for c in _configs(20)]
    model = fit(timings)
    # exact data: the error is bounded by the condition number (about 800 here) times float64's 2.2e-16, some
    # 2e-13 on any IEEE-754 CPU whatever its vector width; 1e-6 leaves six orders of margin
    assert model.coefficients == pytest.approx(tuple(truth), rel=1e-6)
    assert max(held_out_errors(timings)) < 1e-6
    assert LatencyModel(model.coefficients).predict(preset("XS")) == pytest.approx(features(preset("XS")) @ truth)


def test_held_out_errors_see_what_the_features_miss() -> None:
    configs = _configs(20)
    timings = [_timing(c, float(features(c) @ [2.0, 30.0, 0.4, 1.5]) * (1.5 if i % 2 else 1.0))
               for i, c in enumerate(configs)]
    assert np.median(held_out_errors(timings)) > 0.05


def test_fit_needs_four_timings() -> None:
    with pytest.raises(ConfigError, match="at least 4"):
        fit([_timing(TINY, 1.0)] * 3)


def test_latency_command_times_once_then_reads_the_table(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import json

    from x3dsearch.cli import main

    monkeypatch.setenv("X3DSEARCH_CACHE", str(tmp_path))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.to_yaml())
    assert main(["latency", "--config", str(config), "--repeats", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["config"] == TINY.to_dict() and first["repeats"] == 2 and first["ms"] > 0
    assert main(["latency", "--config", str(config)]) == 0  # from the table: the same numbers
    assert f"{first['ms']:.2f} ms per clip (median of 2, ±" in capsys.readouterr().out
    timings = LatencyTable(tmp_path / latency.TABLE_NAME).timings()
    assert [t.x3d for t in timings] == [latency.REFERENCE, TINY] and timings[1].reference_ms == timings[0].ms


def test_latency_sample_fits_and_cross_validates(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from x3dsearch.optuna_search import sample_configs
    from x3dsearch.space import load_space

    truth = np.array([2.0, 30.0, 0.4, 1.5])
    monkeypatch.setattr(latency, "measure", lambda config, reference=None, **kw: _timing(
        config, float(features(config) @ truth), reference_ms=math.nan if reference is None else reference.ms))
    # Optuna's seeded random sampler draws the same 12 configs everywhere; exact data again (condition ~700)
    summary = latency.check_predictor(sample_configs(load_space(), 12, 2.0), LatencyTable(tmp_path / "t.csv"))
    assert summary["configs"] == 13 and summary["median_error"] < 1e-6  # the 12 and the reference
    assert summary["coefficients"] == pytest.approx(list(truth), rel=1e-6)
    assert "held-out error (5-fold): median 0.0%" in latency.describe_check(summary)


def test_a_ray_node_needs_a_cluster_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from x3dsearch.errors import UserError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # another test's Ray: this one asks about a fresh process
        pytest.skip("Ray already runs in this process")
    with pytest.raises(UserError, match="needs a cluster: pass --address"):
        latency.RayNode("deploy").measure(TINY)
    with pytest.raises(UserError, match="not HOST:PORT"):
        latency.RayNode("deploy", address="nowhere").measure(TINY)


def test_a_ray_node_times_where_its_resource_is(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import tempfile

    import ray

    from x3dsearch.errors import UserError

    ray_tmp = tempfile.mkdtemp(prefix="x3l", dir="/tmp")  # Ray's socket paths are length-limited
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=1, resources={"deploy": 1}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        here = []
        real = latency.measure

        def counted(*args, **kwargs):  # shipped to the node by value: only a call in this process counts here
            here.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(latency, "measure", counted)
        cost = latency.LatencyCost((LatencyTable(tmp_path / "latency.csv"),), node=latency.RayNode("deploy"),
                                   repeats=2)
        ms = cost.of(TINY)
        assert here == []  # timed in a Ray task, not in this process
        calibration, row = LatencyTable(tmp_path / "latency.csv").rows()
        assert calibration.x3d == latency.REFERENCE and row.reference_ms == calibration.ms
        assert ms > 0 and row.ms == ms and row.repeats == 2 and row.device_name == latency.device_name()
        assert cost.of(TINY) == ms  # read back, not timed again
        with pytest.raises(UserError, match="no node of the Ray cluster offers the resource 'gpu-box'"):
            latency.LatencyCost((LatencyTable(tmp_path / "other.csv"),), node=latency.RayNode("gpu-box"))
        with pytest.raises(UserError) as failed:  # the node's own error comes back as the one line it is
            latency.RayNode("deploy").measure(TINY, batch=0)
        assert str(failed.value) == "batch, threads and repeats must be positive, warmup not negative"
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
