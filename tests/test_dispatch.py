"""Ray Tune dispatch with stub trial functions: records per trial, retries on worker death."""

import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

from x3dsearch import dispatch
from x3dsearch.dispatch import (_TOKEN_SETUP_LOGGER, DispatchOptions, RayDispatcher, check_address,
                                _not_token_banner, _token_banner_hidden)
from x3dsearch.errors import UserError
from x3dsearch.trial import TrialJob

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _job(key, **config):
    """A job whose config carries what the stub trial functions below read."""
    return TrialJob(key=key, config=config, recipe={}, data="", seed=0)


def _echo(job):
    return {"status": "ok", "top1": job.config["value"], "seconds": 0.0}


def _with_lists(job):
    return {"status": "ok", "top1": 0.5, "classes": ["a", "b"], "val": {"per_class": [0.25, 0.75]}}


def _die_once(job):
    marker = Path(job.config["marker"])
    if not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"status": "ok", "top1": 1.0, "seconds": 0.0}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(tmp_path, trial_fn, jobs, **options):
    records = []
    dispatcher = RayDispatcher(DispatchOptions(**options), tmp_path / "ray", trial_fn=trial_fn)
    dispatcher.run(jobs, lambda job, record: records.append((job.key, record)))
    return records


def test_every_job_reports_once_with_its_metrics(local_ray, tmp_path):
    records = _run(tmp_path, _echo, [_job(f"k{i}", value=i / 10) for i in range(4)])
    assert sorted((k, r["top1"], r["attempt"]) for k, r in records) == \
        [("k0", 0.0, 1), ("k1", 0.1, 1), ("k2", 0.2, 1), ("k3", 0.3, 1)]
    assert all(r["node"] and r["trial_ended"] >= r["trial_started"] for _, r in records)


def test_list_and_dict_metrics_arrive_intact_without_logger_warnings(local_ray, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        records = _run(tmp_path, _with_lists, [_job("only")])
    (_, record), = records
    assert record["classes"] == ["a", "b"] and record["val"] == {"per_class": [0.25, 0.75]}
    assert record["top1"] == 0.5 and "nested_json" not in record
    assert not [r for r in caplog.records if "invalid value" in r.getMessage()]


def test_dead_worker_is_retried(local_ray, tmp_path):
    marker = tmp_path / "marker"
    records = _run(tmp_path, _die_once, [_job("only", marker=str(marker))], max_failures=2)
    statuses = [r["status"] for _, r in records]
    assert statuses == ["retried", "ok"] and marker.exists()
    assert records[-1][1]["attempt"] == 2


def test_dead_worker_without_retries_is_failed(local_ray, tmp_path):
    records = _run(tmp_path, _die_once, [_job("only", marker=str(tmp_path / "m"))], max_failures=0)
    assert [r["status"] for _, r in records] == ["failed"]
    assert records[0][1]["reason"]


@pytest.mark.parametrize("address", ["127.0.0.1:1", "nonsense", "ray://127.0.0.1:1"])
def test_unreachable_address_is_one_line_error(address):
    with pytest.raises(UserError) as err:
        check_address(address)
    assert "\n" not in str(err.value)


class _Collect(logging.Handler):
    """Keeps the messages that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_token_banner_is_hidden_only_while_a_local_ray_starts():
    from ray._private.authentication import authentication_token_setup as token_setup

    logger = logging.getLogger(_TOKEN_SETUP_LOGGER)
    assert token_setup.logger is logger  # Ray still logs the notice where the filter sits
    seen = _Collect()
    logger.addHandler(seen)
    try:
        with _token_banner_hidden():
            token_setup._warn_token_auth_enabled()
            logger.warning("another warning")
        token_setup._warn_token_auth_enabled()
    finally:
        logger.removeHandler(seen)
    assert seen.messages[0] == "another warning"
    assert len(seen.messages) == 2 and seen.messages[1].startswith("Token authentication is enabled")


@pytest.mark.parametrize("address, hidden", [(None, True), ("head:6379", False)])
def test_banner_filter_applies_to_the_private_local_ray_only(monkeypatch, tmp_path, address, hidden):
    filtering = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(dispatch.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(dispatch, "check_address", lambda address: None)
    monkeypatch.setattr(dispatch.ray, "init", lambda **kwargs: filtering.append(
        (kwargs["address"], _not_token_banner in logging.getLogger(_TOKEN_SETUP_LOGGER).filters)))
    RayDispatcher(DispatchOptions(address=address), tmp_path).start()
    assert filtering == [(address or "local", hidden)]
    assert _not_token_banner not in logging.getLogger(_TOKEN_SETUP_LOGGER).filters
