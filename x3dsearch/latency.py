"""Cost as users pay it: measured inference latency of a config, a per-machine table of timings, a predictor.

FLOPs are not latency for X3D: its channelwise 3-D convs, squeeze-excitation and Swish do little
arithmetic per byte moved. :func:`measure` times the network as it would be deployed (BatchNorm
folded, channels-last with the fast kernels, ``inference_mode``); :class:`LatencyTable` keeps each
timing in a CSV under the cache folder, keyed by (config, device model, batch, threads), so that a
config is timed once per machine; :func:`fit` fits a :class:`LatencyModel` on that table for the
configs not yet timed, and :func:`held_out_errors` says how far off it is.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .config import X3DConfig, stage_layout
from .cost import channelwise_flops, count_flops
from .data.cache import cache_root
from .errors import ConfigError
from .model import build_model, fold_batchnorm
from .progress import progress

if TYPE_CHECKING:
    from .space import SearchSpace

__all__ = ["Timing", "device_name", "measure", "LatencyTable", "LatencyModel", "features", "fit",
           "held_out_errors", "sample_configs", "describe", "check_predictor", "describe_check", "TABLE_NAME"]

TABLE_NAME = "latency.csv"
Clock = Callable[[], float]


@dataclass(frozen=True)
class Timing:
    """Inference time per clip of one config on one device: the median and the range over the repeats."""

    config: str  # the config as JSON
    device: str  # "cpu" or "cuda"
    device_name: str  # the CPU or GPU model
    batch: int
    threads: int
    ms: float  # median per clip
    fastest_ms: float
    slowest_ms: float
    repeats: int
    q1_ms: float = math.nan  # the quartiles over the repeats
    q3_ms: float = math.nan

    @property
    def spread(self) -> float:
        """Half the interquartile range over the repeats, relative to the median (0.05 is +-5%)."""
        return (self.q3_ms - self.q1_ms) / 2 / self.ms if self.ms > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-able form, the config as a mapping and the spread included."""
        return {**asdict(self), "config": json.loads(self.config), "spread": self.spread}

    @property
    def x3d(self) -> X3DConfig:
        """The timed config."""
        return X3DConfig.from_dict(json.loads(self.config))


def device_name(device: str = "cpu") -> str:
    """The model of the device that runs the timings: the CPU's name, or the GPU's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure(config: X3DConfig, *, device: str = "cpu", batch: int = 1, threads: int = 1, warmup: int = 3,
            repeats: int = 10, clock: Clock = time.perf_counter) -> Timing:
    """Time ``config``'s inference on ``batch`` clips of its own size: ``warmup`` passes, then ``repeats``."""
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"device must be cpu or cuda (with a GPU present), got {device!r}")
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("batch, threads and repeats must be positive, warmup not negative")
    model = fold_batchnorm(build_model(config)).to(device)
    clip = torch.randn(batch, 3, config.frames, config.crop, config.crop, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with _threads(threads), torch.inference_mode():
        for _ in range(warmup):
            model(clip)
        for _ in range(repeats):
            sync()
            start = clock()
            model(clip)
            sync()
            times.append((clock() - start) * 1e3 / batch)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Timing(config.to_json(), device, device_name(device), batch, threads, float(median), min(times),
                  max(times), repeats, float(q1), float(q3))


class LatencyTable:
    """Timings kept in one CSV file (by default ``latency.csv`` in the cache folder), appended as they come."""

    _FIELDS = [f.name for f in fields(Timing)]

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_root() / TABLE_NAME

    def timings(self, device: str = "cpu", batch: int = 1, threads: int = 1) -> list[Timing]:
        """Every timing on this machine's device model with that batch and thread count (the latest per config)."""
        if not self.path.is_file():
            return []
        name, latest = device_name(device), {}
        with self.path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    timing = Timing(row["config"], row["device"], row["device_name"], int(row["batch"]),
                                    int(row["threads"]), float(row["ms"]), float(row["fastest_ms"]),
                                    float(row["slowest_ms"]), int(row["repeats"]), float(row["q1_ms"]),
                                    float(row["q3_ms"]))
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a crash
                if (timing.device, timing.device_name, timing.batch, timing.threads) == (device, name, batch, threads):
                    latest[timing.config] = timing
        return list(latest.values())

    def lookup(self, config: X3DConfig, device: str = "cpu", batch: int = 1, threads: int = 1) -> Timing | None:
        """The stored timing of ``config``, if this machine has one."""
        return next((t for t in self.timings(device, batch, threads) if t.config == config.key), None)

    def add(self, timing: Timing) -> None:
        """Append one timing (one line, so a crash loses at most the line being written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(asdict(timing))

    def timed(self, config: X3DConfig, device: str = "cpu", batch: int = 1, threads: int = 1, fresh: bool = False,
              **measure_options: float) -> Timing:
        """The stored timing of ``config``, or (none stored, or ``fresh``) a new measurement that is stored."""
        timing = None if fresh else self.lookup(config, device, batch, threads)
        if timing is None:
            timing = measure(config, device=device, batch=batch, threads=threads, **measure_options)
            self.add(timing)
        return timing


def features(config: X3DConfig) -> np.ndarray:
    """What a config's latency grows with: pointwise and channelwise GMACs, residual blocks, and a constant."""
    channelwise = channelwise_flops(config)
    blocks = sum(b for b, _, _ in stage_layout(config))
    return np.array([(count_flops(config) - channelwise) / 1e9, channelwise / 1e9, blocks, 1.0])


@dataclass(frozen=True)
class LatencyModel:
    """Milliseconds per clip as a linear function of :func:`features`, fitted for relative error."""

    coefficients: tuple[float, ...]

    def predict(self, config: X3DConfig) -> float:
        """Predicted milliseconds per clip of ``config``."""
        return float(features(config) @ np.array(self.coefficients))


def fit(timings: Sequence[Timing]) -> LatencyModel:
    """Least squares on relative error (each row divided by its latency), so small and large models count alike."""
    if len(timings) < 4:
        raise ConfigError(f"a latency model needs at least 4 timed configs, the table has {len(timings)}")
    x = np.stack([features(t.x3d) for t in timings])
    y = np.array([t.ms for t in timings])
    coefficients, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    return LatencyModel(tuple(float(c) for c in coefficients))


def held_out_errors(timings: Sequence[Timing], folds: int = 5, seed: int = 0) -> list[float]:
    """Relative error of each timing predicted by a model fitted without it (k-fold cross-validation)."""
    order = np.random.default_rng(seed).permutation(len(timings))
    errors = [math.nan] * len(timings)
    for fold in range(folds):
        test = set(order[fold::folds].tolist())
        model = fit([t for i, t in enumerate(timings) if i not in test])
        for i in test:
            errors[i] = abs(model.predict(timings[i].x3d) - timings[i].ms) / timings[i].ms
    return errors


def sample_configs(space: "SearchSpace", count: int, max_gflops: float, seed: int = 0) -> list[X3DConfig]:
    """``count`` configs drawn by Optuna's random sampler from the space's box, each at most ``max_gflops``."""
    import optuna

    from .optuna_search import feasible_bounds, propose

    bounds = feasible_bounds(space, max_gflops)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs: list[X3DConfig] = []
    while len(configs) < count:
        config = propose(study.ask(), space, bounds)
        if count_flops(config) <= max_gflops * 1e9 and config not in configs:
            configs.append(config)
    return configs


def describe(timing: Timing, name: str) -> str:
    """One line: the median per clip, the range over the repeats, and where it was measured."""
    thread_word = "thread" if timing.threads == 1 else "threads"
    return (f"{name}: {timing.ms:.2f} ms per clip (median of {timing.repeats}, ±{timing.spread:.1%} between "
            f"quartiles; fastest {timing.fastest_ms:.2f}, slowest {timing.slowest_ms:.2f}) on {timing.device_name}, "
            f"batch {timing.batch}, {timing.threads} {thread_word}")


def check_predictor(space: "SearchSpace", count: int, max_gflops: float, table: LatencyTable, *,
                    device: str = "cpu", batch: int = 1, threads: int = 1, repeats: int = 10) -> dict[str, object]:
    """Time ``count`` sampled configs (those in ``table`` are reused), fit on the whole table, cross-validate."""
    configs = sample_configs(space, count, max_gflops)
    for config in progress(configs, desc="timing", unit="config"):
        table.timed(config, device, batch, threads, repeats=repeats)
    timings = table.timings(device, batch, threads)
    errors = held_out_errors(timings)
    return {"configs": len(timings), "device_name": timings[0].device_name, "table": str(table.path),
            "coefficients": list(fit(timings).coefficients), "median_error": float(np.median(errors)),
            "p90_error": float(np.percentile(errors, 90))}


def describe_check(summary: Mapping[str, Any]) -> str:
    """The fitted latency model and its held-out error, in three lines."""
    a, b, c, d = summary["coefficients"]
    return (f"{summary['configs']} configs timed on {summary['device_name']} ({summary['table']})\n"
            f"latency model: ms per clip = {a:.3g} x pointwise GMACs + {b:.3g} x channelwise GMACs "
            f"+ {c:.3g} x blocks + {d:.3g}\n"
            f"held-out error (5-fold): median {summary['median_error']:.1%}, "
            f"90th percentile {summary['p90_error']:.1%}")
