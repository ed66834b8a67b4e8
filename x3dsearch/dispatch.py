"""Dispatch: every proxy training is a Ray Tune trial, on a local Ray or a cluster.

A batch of candidates becomes one Tune experiment (a grid over their configs). A Tune
callback hands each finished trial to the caller as it ends, so the journal is written
trial by trial. Worker or node deaths are retried by Tune's ``FailureConfig``; a run that
fails on its own (diverged, exception) ends normally with that status and is not retried.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep Tune's own status tables out of our live view

import ray  # noqa: E402
from ray import tune  # noqa: E402

from .errors import UserError
from .faults import kill_once
from .trial import TrialJob
from .workers import DispatchOptions

__all__ = ["DispatchOptions", "RayDispatcher", "TrialFn", "proxy_trial", "check_address"]

TrialFn = Callable[[TrialJob], dict[str, Any]]
_NESTED = "nested_json"  # the key that carries a trial's list and dict metrics through Tune


def proxy_trial(job: TrialJob) -> dict[str, Any]:
    """Train one candidate at proxy fidelity (see :func:`x3dsearch.proxy.run_proxy`); a dict of metrics."""
    from .proxy import run_proxy

    kill_once()
    return run_proxy(job)


def _tune_entry(trial_fn: TrialFn) -> Callable[..., None]:
    def _run(params: dict[str, Any], jobs: Mapping[str, TrialJob]) -> None:
        job = jobs[params["job"]]
        started = time.time()
        metrics = trial_fn(job)
        metrics.update(node=ray.util.get_node_ip_address(), host=socket.gethostname(), pid=os.getpid(),
                       trial_started=started, trial_ended=time.time(), key=job.key)
        tune.report(_packed(metrics))
    return _run


def _packed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Lists and dicts travel as one JSON string: Tune's TensorBoard logger warns on every list it meets."""
    nested = {k: v for k, v in metrics.items() if isinstance(v, (list, tuple, dict))}
    flat = {k: v for k, v in metrics.items() if k not in nested}
    return dict(flat, **{_NESTED: json.dumps(nested)}) if nested else flat


def _unpacked(result: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's metrics as the trial function returned them (inverse of :func:`_packed`)."""
    record = {k: v for k, v in result.items() if k != _NESTED}
    record.update(json.loads(result.get(_NESTED) or "{}"))
    return record


def check_address(address: str) -> None:
    """Fail fast with one line when a HOST:PORT cluster address does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        target = address[len("ray://"):] if address.startswith("ray://") else None
    else:
        target = address
    if not target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Ray address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as err:
        raise UserError(f"Ray cluster at {address} is unreachable ({err.strerror or err})") from None


_TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
_TOKEN_BANNER = "Token authentication is enabled for this Ray cluster"


def _not_token_banner(record: logging.LogRecord) -> bool:
    """Log filter: False for Ray's notice that it turned token authentication on."""
    return not record.getMessage().startswith(_TOKEN_BANNER)


@contextmanager
def _token_banner_hidden() -> Iterator[None]:
    """While our private local Ray starts, drop Ray's token-authentication notice (auth itself stays on).

    A new local cluster enables token auth by default and says how to opt out; that advice is for
    cluster operators and would open every search. Joining a cluster keeps Ray's messages.
    """
    logger = logging.getLogger(_TOKEN_SETUP_LOGGER)
    logger.addFilter(_not_token_banner)
    try:
        yield
    finally:
        logger.removeFilter(_not_token_banner)


class RayDispatcher:
    """Runs batches of trials through Ray Tune and reports each as it finishes."""

    def __init__(self, options: DispatchOptions, storage: Path, trial_fn: TrialFn = proxy_trial) -> None:
        self.options = options
        self.storage = Path(options.storage or storage).resolve()
        self.trial_fn = trial_fn
        self._started_ray = False
        self._batch = 0

    def start(self) -> None:
        """Connect to the cluster, or start a local Ray using this machine's CPUs."""
        if ray.is_initialized():
            return
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address:
            check_address(address)
            ray.init(address=address, **kwargs)
        else:
            # address="local": always a new Ray, even if a `ray start` cluster runs on this machine
            with _token_banner_hidden():
                ray.init(address="local", num_cpus=self.options.num_cpus or os.cpu_count(), **kwargs)
            self._started_ray = True

    def shutdown(self) -> None:
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    def run(self, jobs: Sequence[TrialJob], on_trial: Callable[[TrialJob, dict[str, Any]], None]) -> None:
        """Run one trial per job (each job has a unique ``key``); ``on_trial(job, record)`` per attempt.

        ``record`` holds the trial's reported metrics plus ``attempt`` and, for a worker that
        died, ``status="retried"`` (when Tune retries it) or ``status="failed"``.
        """
        self.start()
        self._batch += 1
        by_key = {job.key: replace(job, cpus=self.options.cpus_per_trial) for job in jobs}
        resources = {"cpu": self.options.cpus_per_trial, "gpu": self.options.gpus_per_trial}
        trainable = tune.with_resources(tune.with_parameters(_tune_entry(self.trial_fn), jobs=by_key),
                                        resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search(list(by_key))},
            tune_config=tune.TuneConfig(max_concurrent_trials=self.options.max_concurrent,
                                        trial_name_creator=lambda t: f"trial_{t.trial_id}",
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"batch{self._batch:03d}_{int(time.time())}", storage_path=str(self.storage),
                failure_config=tune.FailureConfig(max_failures=self.options.max_failures),
                callbacks=[_Reporter(by_key, on_trial)], verbose=0),
        )
        tuner.fit()


class _Reporter(tune.Callback):
    """Tune callback that turns trial events into records for the caller, in the driver."""

    def __init__(self, by_key: Mapping[str, TrialJob], on_trial: Callable[[TrialJob, dict[str, Any]], None]) -> None:
        self.by_key = by_key
        self.on_trial = on_trial

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = _unpacked(trial.last_result or {})
        record["attempt"] = trial.num_failures + 1
        self.on_trial(self.by_key[trial.config["job"]], record)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial(self.by_key[trial.config["job"]],
                      {"status": "retried", "attempt": trial.num_failures, "reason": _error_line(trial)})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial(self.by_key[trial.config["job"]],
                      {"status": "failed", "attempt": trial.num_failures, "reason": _error_line(trial)})


def _error_line(trial: Any) -> str:
    """Last meaningful line of a Tune trial's error (worker death, exception)."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "worker or node died"
