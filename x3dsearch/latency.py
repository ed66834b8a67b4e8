"""Cost as users pay it: measured inference latency of a config, a per-machine table of timings, a predictor.

FLOPs are not latency for X3D: its channelwise 3-D convs, squeeze-excitation and Swish do little
arithmetic per byte moved. :func:`measure` times the network as it would be deployed (BatchNorm
folded, channels-last with the fast kernels, ``inference_mode``); :class:`LatencyTable` keeps each
timing in a CSV under the cache folder, keyed by (config, device model, batch, threads), so that a
config is timed once per machine; :func:`fit` fits a :class:`LatencyModel` on that table for the
configs not yet timed, and :func:`held_out_errors` says how far off it is. :class:`LatencyCost` is that
latency as a search's cost C(X) (:class:`x3dsearch.cost.Cost`): each network timed once, then read back.
With a :class:`RayNode` the timings run on the cluster node that offers a named resource (the deployment
device) instead of the machine that runs the search.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import platform
import time
from contextlib import contextmanager
import dataclasses
import fcntl
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .config import X3DConfig, preset, round_width, stage_layout
from .cost import channelwise_flops, count_flops
from .data.cache import cache_root
from .errors import ConfigError, UserError
from .model import build_model, fold_batchnorm
from .progress import progress

__all__ = ["Timing", "device_name", "measure", "RayNode", "LatencyTable", "LatencyModel", "features", "fit",
           "held_out_errors", "describe", "check_predictor", "describe_check", "TABLE_NAME",
           "network_key", "thread_count", "LatencyCost", "latency_cost", "run_latencies", "latencies",
           "latency_provenance"]

TABLE_NAME = "latency.csv"
REFERENCE = preset("XS")  # every timing alternates its passes with this network's (docs/latency.md, "Timing against
_CALIBRATION_REPEATS = 50  # a reference"); passes of the reference's own timing, the calibration the rest scale to
_PREDICT_AFTER = 12  # timings stored before the predictor stands in for a measurement: three per feature
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
    reference_ms: float = math.nan  # the calibrated ms of REFERENCE the passes were scaled to (NaN: unscaled)
    raw_ms: float = math.nan  # the median of the unscaled passes (NaN: unscaled, then ``ms`` is it)

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
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device}: this torch sees no GPU")
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
            repeats: int = 10, clock: Clock = time.perf_counter, reference: Timing | None = None) -> Timing:
    """Time ``config``'s inference on ``batch`` clips of its own size: ``warmup`` passes, then ``repeats``.

    With ``reference`` (the calibrated timing of another network) each pass alternates with one of that
    network and is scaled by the reference's calibrated ms over its pass beside it, so that a machine slowed
    for a while (a shared or virtual one) slows both and the scaled times keep to the calibrated speed.
    """
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"device must be cpu or cuda (with a GPU present), got {device!r}")
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("batch, threads and repeats must be positive, warmup not negative")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    networks = [config] if reference is None else [config, reference.x3d]
    runs = [(fold_batchnorm(build_model(c)).to(device), torch.randn(batch, 3, c.frames, c.crop, c.crop, device=device))
            for c in networks]
    times: list[list[float]] = [[] for _ in runs]
    with _threads(threads), torch.inference_mode():
        for model, clip in runs:
            for _ in range(warmup):
                model(clip)
        for _ in range(repeats):
            for (model, clip), passes in zip(runs, times):
                sync()
                start = clock()
                model(clip)
                sync()
                passes.append((clock() - start) * 1e3 / batch)
    scaled = times[0] if reference is None else [c * reference.ms / r for c, r in zip(*times)]
    q1, median, q3 = np.percentile(scaled, [25, 50, 75])
    extra = {} if reference is None else {"reference_ms": reference.ms, "raw_ms": float(np.median(times[0]))}
    return Timing(config.to_json(), device, device_name(device), batch, threads, float(median), min(scaled),
                  max(scaled), repeats, float(q1), float(q3), **extra)


@dataclass(frozen=True)
class RayNode:
    """Where timings run: the Ray node offering custom ``resource`` (``ray start --resources='{"NAME": 1}'``),
    one timing at a time, on the cluster at ``address`` (or RAY_ADDRESS) unless Ray is already connected."""

    resource: str
    address: str | None = None

    def measure(self, config: X3DConfig, **options: Any) -> Timing:
        """:func:`measure` on the node."""
        return self._call(measure, config, **options)

    def device_name(self, device: str = "cpu") -> str:
        """:func:`device_name` of the node (asked once per process)."""
        return _node_device_name(self, device)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import ray

        from .dispatch import check_address

        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            if not address:
                raise UserError(f"timing on the Ray node with resource {self.resource!r} needs a cluster: "
                                f"pass --address HOST:PORT (or set RAY_ADDRESS)")
            check_address(address)
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        if ray.cluster_resources().get(self.resource, 0) < 1:
            raise UserError(f"no node of the Ray cluster offers the resource {self.resource!r}; start the "
                            f"deployment node with: ray start --address ... --num-cpus=0 --num-gpus=0 "
                            f"--resources='{{\"{self.resource}\": 1}}'")
        task = ray.remote(fn).options(num_cpus=0, resources={self.resource: 1}, max_retries=0)
        try:
            return ray.get(task.remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as err:  # the node's own error, as one line
            cause = err.cause
            raise (cause if isinstance(cause, UserError)
                   else UserError(f"timing on the node offering {self.resource!r} failed: {cause}")) from None


@functools.lru_cache(maxsize=None)
def _node_device_name(node: RayNode, device: str) -> str:
    return node._call(device_name, device)


def _timer(node: RayNode | None) -> Callable[..., Timing]:
    """:func:`measure` here, or on ``node``."""
    return node.measure if node else measure


def thread_count(threads: int) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{threads} thread{'s' if threads != 1 else ''}"


class LatencyTable:
    """Timings kept in one CSV file (by default ``latency.csv`` in the cache folder), appended as they come."""

    _FIELDS = [f.name for f in fields(Timing)]

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_root() / TABLE_NAME

    def rows(self) -> list[Timing]:
        """Every timing in the file, oldest first, whatever the device."""
        if not self.path.is_file():
            return []
        out = []
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                if None in row.values():
                    continue  # a line cut short by a crash
                try:  # files of an older version lack the last columns: unscaled
                    out.append(Timing(row["config"], row["device"], row["device_name"], int(row["batch"]),
                                      int(row["threads"]), float(row["ms"]), float(row["fastest_ms"]),
                                      float(row["slowest_ms"]), int(row["repeats"]), float(row["q1_ms"]),
                                      float(row["q3_ms"]), float(row.get("reference_ms", math.nan)),
                                      float(row.get("raw_ms", math.nan))))
                except (KeyError, TypeError, ValueError):
                    continue
        return out

    def timings(self, device: str = "cpu", batch: int = 1, threads: int = 1, node: RayNode | None = None
                ) -> list[Timing]:
        """Every timing on this machine's (or ``node``'s) device model with that batch and thread count, the latest
        per config; those scaled to another calibration of :data:`REFERENCE` than the latest are rescaled to it,
        and unscaled timings of other networks (made before timings were scaled) are left out."""
        name = node.device_name(device) if node else device_name(device)
        return on_one_scale(t for t in self.rows()
                            if (t.device, t.device_name, t.batch, t.threads) == (device, name, batch, threads))

    def add(self, timing: Timing) -> None:
        """Append one timing (one line, so a crash loses at most the line being written), under a lock shared
        with other processes; a file with the columns of an older version is first rewritten with today's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():
                self._upgrade()
            new = not self.path.is_file()
            with self.path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self._FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(asdict(timing))

    def _upgrade(self) -> None:
        """Rewrite a file with older columns under today's header (missing values blank, read as NaN), atomically."""
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames == self._FIELDS:
                return
            rows = list(reader)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._FIELDS, restval="nan", extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: v for k, v in row.items() if k is not None} for row in rows)
        os.replace(temporary, self.path)


def _is_calibration(timing: Timing) -> bool:
    """A calibration: :data:`REFERENCE`'s own timing, marked as scaled to itself."""
    return timing.config == REFERENCE.key and timing.reference_ms == timing.ms


def on_one_scale(timings: Iterable[Timing]) -> list[Timing]:
    """The latest of ``timings`` per config on one scale: the latest calibration first, then every scaled timing
    rescaled to it (unscaled timings, from before timings were scaled, left out)."""
    latest = list({t.config: t for t in timings}.values())
    calibration = next((t for t in latest if _is_calibration(t)), None)
    scaled = [t for t in latest if not math.isnan(t.reference_ms) and not _is_calibration(t)]
    if calibration is None:
        return scaled
    return [calibration, *(t if t.reference_ms == calibration.ms else _rescaled(t, calibration.ms) for t in scaled)]


def _rescaled(timing: Timing, reference_ms: float) -> Timing:
    """``timing`` scaled to another calibration of the reference network."""
    k = reference_ms / timing.reference_ms
    return dataclasses.replace(timing, ms=timing.ms * k, fastest_ms=timing.fastest_ms * k,
                               slowest_ms=timing.slowest_ms * k, q1_ms=timing.q1_ms * k, q3_ms=timing.q3_ms * k,
                               reference_ms=reference_ms)


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


def describe(timing: Timing, name: str) -> str:
    """One line: the median per clip, the range over the repeats, where it was measured and what it was scaled to."""
    scaled = ("" if math.isnan(timing.reference_ms) else
              f"; scaled to the reference {REFERENCE.short} at {timing.reference_ms:.2f} ms, unscaled "
              f"{timing.raw_ms:.2f}")
    return (f"{name}: {timing.ms:.2f} ms per clip (median of {timing.repeats}, ±{timing.spread:.1%} between "
            f"quartiles; fastest {timing.fastest_ms:.2f}, slowest {timing.slowest_ms:.2f}{scaled}) on "
            f"{timing.device_name}, batch {timing.batch}, {thread_count(timing.threads)}")


def check_predictor(configs: Sequence[X3DConfig], table: LatencyTable, *, device: str = "cpu", batch: int = 1,
                    threads: int = 1, repeats: int = 10, node: RayNode | None = None) -> dict[str, object]:
    """Time ``configs`` (those in ``table`` are reused), fit on the whole table, cross-validate."""
    cost = LatencyCost((table,), device, batch, threads, repeats, node)
    for config in progress(configs, desc="timing", unit="config"):
        cost.timing(config)
    timings = table.timings(device, batch, threads, node)
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


def network_key(config: X3DConfig) -> str:
    """What a config's latency depends on: the network and its input (not the stride, nor factor digits that round
    away), so that two configs building the same network share one timing."""
    layout = stage_layout(config)
    return json.dumps([config.frames, config.crop, round_width(config.stem_width, config.width), layout,
                       int(config.bottleneck * layout[-1][1]), config.head_width, config.num_classes, config.se_ratio])


@dataclass(frozen=True)
class LatencyCost:
    """C(X) as measured milliseconds per clip (a :class:`x3dsearch.cost.Cost`): a network's stored timing, else
    one :func:`measure` against the calibration (the stored timing of :data:`REFERENCE`, timed first with
    more passes), stored in every table. The first table (a run's own) also gets the timings found in the
    others, so it holds every latency the run decided on and a resume reads the same ones back.
    """

    tables: tuple[LatencyTable, ...]
    device: str = "cpu"
    batch: int = 1
    threads: int = 1
    repeats: int = 10
    node: RayNode | None = None  # time on this Ray node instead of here
    name: str = "latency"
    unit: str = "ms"
    per_unit: float = 1.0
    _known: dict[str, tuple[int, Timing]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        found = [table.timings(self.device, self.batch, self.threads, self.node) for table in self.tables]
        for index in reversed(range(len(self.tables))):  # the first table wins
            for timing in found[index]:
                self._known[network_key(timing.x3d)] = (index, timing)
        calibration = next((rows[0] for rows in found if rows and _is_calibration(rows[0])), None)
        if calibration is not None:  # one scale for the whole run: the first table's calibration, else the cache's
            self._adopt(calibration, next(i for i, rows in enumerate(found) if rows and rows[0] is calibration))

    def _adopt(self, calibration: Timing, index: int) -> None:
        """Make ``calibration`` the one every known timing is scaled to."""
        for key, (at, timing) in self._known.items():
            if not _is_calibration(timing) and timing.reference_ms != calibration.ms:
                self._known[key] = (at, _rescaled(timing, calibration.ms))
        self._known[network_key(REFERENCE)] = (index, calibration)

    def timing(self, config: X3DConfig, fresh: bool = False) -> Timing:
        """The timing of ``config``'s network: stored, or (none stored, or ``fresh``) measured now and stored.
        Another config of the reference's network is the calibration itself."""
        key = network_key(config)
        if key == network_key(REFERENCE) and config.key != REFERENCE.key:
            return self.timing(REFERENCE, fresh)
        index, timing = (None, None) if fresh else self._known.get(key, (None, None))
        if timing is None:
            if config.key == REFERENCE.key:  # a calibration: unscaled, marked as scaled to itself
                timing = _timer(self.node)(config, device=self.device, batch=self.batch, threads=self.threads,
                                           repeats=max(_CALIBRATION_REPEATS, self.repeats))
                timing = dataclasses.replace(timing, reference_ms=timing.ms, raw_ms=timing.ms)
                self._adopt(timing, 0)
            else:
                timing = _timer(self.node)(config, device=self.device, batch=self.batch, threads=self.threads,
                                           repeats=self.repeats, reference=self.timing(REFERENCE))
            for table in self.tables:
                table.add(timing)
        elif index != 0:
            if key != network_key(REFERENCE):
                self.timing(REFERENCE)  # the run's table holds the calibration its copies are scaled to
            self.tables[0].add(timing)
        self._known[key] = (0, timing)
        return timing

    def of(self, config: X3DConfig) -> float:
        return self.timing(config).ms

    def estimate(self, config: X3DConfig) -> float:
        """The stored timing, else the latency model fitted on the stored ones (measured while fewer than
        ``_PREDICT_AFTER``: a fit on as many timings as features would follow their noise)."""
        stored = self._known.get(network_key(config))
        if stored is not None or len(self._known) < _PREDICT_AFTER:
            return self.of(config)
        return fit([timing for _, timing in self._known.values()]).predict(config)


def latency_cost(run_dir: str | Path | None, device: str = "cpu", batch: int = 1, threads: int = 1,
                 node: RayNode | None = None) -> LatencyCost:
    """The latency cost of a run: its own ``RUN_DIR/latency.csv`` first (none for a dry run), then the cache's."""
    own = () if run_dir is None else (LatencyTable(Path(run_dir) / TABLE_NAME),)
    return LatencyCost((*own, LatencyTable()), device, batch, threads, node=node)


def run_latencies(run_dir: str | Path) -> dict[str, Timing]:
    """The timings a latency-costed run decided on, on its calibration's scale, by :func:`network_key` (empty for a
    FLOP-costed run)."""
    return {network_key(t.x3d): t for t in on_one_scale(LatencyTable(Path(run_dir) / TABLE_NAME).rows())}


def latencies(config_keys: Iterable[str], timings: Mapping[str, Timing]) -> list[float]:
    """Measured ms per clip of each config key (JSON, as the journal keeps it) in ``timings``; NaN where untimed."""
    found = (timings.get(network_key(X3DConfig.from_dict(json.loads(key)))) for key in config_keys)
    return [math.nan if timing is None else timing.ms for timing in found]


def latency_provenance(run_dir: str | Path, config: X3DConfig) -> dict[str, Any]:
    """``config``'s latency as a latency-costed run measured it, and on what (empty if the run has no timing)."""
    timing = run_latencies(run_dir).get(network_key(config))
    if timing is None:
        return {}
    return {"latency_ms": timing.ms, "latency_spread": timing.spread, "latency_device": timing.device,
            "latency_device_name": timing.device_name, "latency_batch": timing.batch,
            "latency_threads": timing.threads}
