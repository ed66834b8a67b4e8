"""Training schedules as data: a frozen :class:`Schedule`, shipped in ``search_spaces/schedules.yaml``.

One training loop (:func:`x3dsearch.train.train`) serves every fidelity; a schedule says how
long, on how much data, at which input scale and with which optimiser settings it runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from .config import X3DConfig
from .errors import ConfigError

__all__ = ["Schedule", "load_schedule", "schedule_names", "MIN_TRAIN_CROP", "OPTIMIZERS"]

MIN_TRAIN_CROP = 16
_PRECISIONS = ("fp32", "bf16", "auto")
OPTIMIZERS = ("sgd", "adamw")
_SHIPPED = "schedules.yaml"
_RANGES = {  # field: (rule as the error message says it, check)
    "base_lr": ("> 0", lambda v: v > 0),
    "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "weight_decay": ("in [0, 1)", lambda v: 0 <= v < 1),
    "warmup_epochs": (">= 0", lambda v: v >= 0),
    "label_smoothing": ("in [0, 1)", lambda v: 0 <= v < 1),
    "spatial_scale": ("in (0, 1]", lambda v: 0 < v <= 1),
    "time_budget_s": ("positive or null", lambda v: v > 0),
}


@dataclass(frozen=True)
class Schedule:
    """How one training runs: length, data subset, input scale, optimiser, evaluation views.

    ``optimizer`` is ``sgd`` (with ``momentum``: the paper's recipe) or ``adamw`` (``momentum`` is its
    first beta), which learns faster in very short proxy runs. ``base_lr`` is the learning rate at
    ``ref_batch_size``; the loop scales it linearly with ``batch_size``. ``spatial_scale`` trains and evaluates the network at
    ``round(crop * spatial_scale)`` pixels (at least 16) while its cost stays reported at its own
    crop. ``train_videos``/``val_videos`` of ``None`` use every video. ``cache`` keeps decoded
    clips between trainings (in the data layer's cache folder, ``$X3DSEARCH_CACHE``).
    ``precise_bn_clips`` > 0 recomputes BatchNorm statistics on that many training clips after
    training ("precise BN"): the running averages lag behind fast-moving weights in short runs.
    As a search's proxy, ``rungs`` (increasing epoch counts ending at ``epochs``) score every
    candidate of a step at the first rung and promote the best ``rung_keep`` fraction to the next
    (successive halving, :mod:`x3dsearch.rungs`); when the best two end closer than ``close_call``
    (top-1), both train again with ``close_call_seeds`` other seeds and rank by their mean.
    ``step_compute`` (GFLOP-clips) gives cheap search steps more epochs: every candidate of a step
    trains at least that much, counted at the step's expected candidate cost, in whole epochs up
    to ``max_epochs`` (see :meth:`for_step`). Early steps cost seconds either way and otherwise
    stay near chance; the expensive late steps keep ``epochs``. ``epochs_under`` ([[gflops, epochs],
    ...], ascending) overrides that for the tiniest steps: a step whose candidates should cost under
    ``gflops`` (twice its parent's cost) trains ``epochs`` (the first pair that applies). Networks that small run at a per-op
    overhead floor, so an epoch costs seconds whatever their FLOPs, and they need many epochs to
    learn at all. ``start_epochs`` trains the search's start (step 0 of an inheriting search, one
    model) that long, so the first candidates inherit a network that has learned something (see
    :meth:`for_start`).
    ``debug_nan_step`` makes the loss NaN at that global step (a test hook that travels with the schedule to
    Ray workers).
    """

    name: str = "custom"
    description: str = ""
    optimizer: str = "sgd"
    epochs: int = 1
    batch_size: int = 16
    base_lr: float = 0.1
    ref_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    train_videos: int | None = None
    val_videos: int | None = None
    eval_views: tuple[int, int] = (1, 1)
    spatial_scale: float = 1.0
    time_budget_s: float | None = None
    channels_last: bool = True
    precision: str = "auto"
    num_workers: int = 0
    cache: bool = False
    precise_bn_clips: int = 0
    rungs: tuple[int, ...] | None = None
    rung_keep: float = 0.5
    close_call: float = 0.0
    close_call_seeds: int = 0
    step_compute: float | None = None
    max_epochs: int | None = None
    epochs_under: tuple[tuple[float, int], ...] | None = None
    start_epochs: int | None = None
    debug_nan_step: int | None = None

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"schedule name must be a non-empty string, got {self.name!r}")
        for field_name in ("epochs", "batch_size", "ref_batch_size"):
            _check_int(where, field_name, getattr(self, field_name), low=1)
        _check_int(where, "num_workers", self.num_workers, low=0)
        _check_int(where, "precise_bn_clips", self.precise_bn_clips, low=0)
        for field_name in ("train_videos", "val_videos"):
            if getattr(self, field_name) is not None:
                _check_int(where, field_name, getattr(self, field_name), low=1, hint=" or null for all")
        if self.debug_nan_step is not None:
            _check_int(where, "debug_nan_step", self.debug_nan_step, low=0)
        for field_name, (rule, ok) in _RANGES.items():
            value = getattr(self, field_name)
            if value is None and field_name == "time_budget_s":
                continue
            value = _number(where, field_name, value)
            if not ok(value):
                raise ConfigError(f"{where}: {field_name} must be {rule}, got {value!r}")
            object.__setattr__(self, field_name, value)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"{where}: warmup_epochs ({self.warmup_epochs:g}) exceeds epochs ({self.epochs})")
        views = self.eval_views
        if isinstance(views, (str, bytes)) or not hasattr(views, "__len__") or len(views) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in views):
            raise ConfigError(f"{where}: eval_views must be [temporal, spatial] positive integers, got {views!r}")
        object.__setattr__(self, "eval_views", (int(views[0]), int(views[1])))
        self._check_rungs(where)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"{where}: precision must be one of {', '.join(_PRECISIONS)}, got {self.precision!r}")
        for field_name in ("channels_last", "cache"):
            if not isinstance(getattr(self, field_name), bool):
                raise ConfigError(f"{where}: {field_name} must be true or false, got {getattr(self, field_name)!r}")

    def _check_rungs(self, where: str) -> None:
        if self.rungs is not None:
            rungs = self.rungs
            if (isinstance(rungs, (str, bytes)) or not hasattr(rungs, "__iter__")
                    or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rungs)
                    or list(rungs) != sorted(set(rungs)) or not rungs or list(rungs)[-1] != self.epochs):
                raise ConfigError(f"{where}: rungs must be increasing positive epoch counts ending at epochs "
                                  f"({self.epochs}), got {rungs!r}")
            object.__setattr__(self, "rungs", tuple(rungs))
        if not 0 < _number(where, "rung_keep", self.rung_keep) <= 1:
            raise ConfigError(f"{where}: rung_keep must be in (0, 1], got {self.rung_keep!r}")
        if _number(where, "close_call", self.close_call) < 0:
            raise ConfigError(f"{where}: close_call must be >= 0, got {self.close_call!r}")
        _check_int(where, "close_call_seeds", self.close_call_seeds, low=0)
        if self.step_compute is not None and _number(where, "step_compute", self.step_compute) <= 0:
            raise ConfigError(f"{where}: step_compute must be positive or null, got {self.step_compute!r}")
        if self.max_epochs is not None:
            _check_int(where, "max_epochs", self.max_epochs, low=self.epochs, hint=f" >= epochs ({self.epochs})")
        if self.start_epochs is not None:
            _check_int(where, "start_epochs", self.start_epochs, low=1, hint=" or null")
        self._check_epochs_under(where)

    def _check_epochs_under(self, where: str) -> None:
        if self.epochs_under is None:
            return
        message = (f"{where}: epochs_under must be [[gflops, epochs], ...] with increasing positive gflops "
                   f"and positive integer epochs, got {self.epochs_under!r}")
        try:
            pairs = [(_number(where, "gflops", g), e) for g, e in self.epochs_under]
            for _, epochs in pairs:
                _check_int(where, "epochs", epochs, low=1)
        except (ConfigError, TypeError, ValueError):
            raise ConfigError(message) from None
        bounds = [g for g, _ in pairs]
        if not pairs or bounds[0] <= 0 or bounds != sorted(set(bounds)):
            raise ConfigError(message)
        object.__setattr__(self, "epochs_under", tuple((float(g), e) for g, e in pairs))

    def for_step(self, gflops: float, clips: int) -> "Schedule":
        """This schedule for a search step whose candidates cost about ``gflops`` and train on ``clips`` clips.

        Under a bound of ``epochs_under`` it trains that pair's epochs; otherwise, with ``step_compute``,
        ``epochs`` rises to ``ceil(step_compute / (gflops * clips))`` (at most ``max_epochs``). The
        rungs and the warm-up stretch in proportion; without either rule, the schedule is unchanged.
        """
        epochs = next((e for bound, e in self.epochs_under or () if 0 < gflops < bound), None)
        if epochs is None:
            if self.step_compute is None or gflops <= 0 or clips <= 0:
                return self
            ceiling = self.max_epochs if self.max_epochs is not None else self.epochs
            epochs = min(ceiling, max(self.epochs, math.ceil(self.step_compute / (gflops * clips))))
        if epochs == self.epochs:
            return self
        rungs = None
        if self.rungs is not None:
            stretched = sorted({max(1, round(r * epochs / self.epochs)) for r in self.rungs[:-1]} - {epochs})
            rungs = (*stretched, epochs)
        ceiling = None if self.max_epochs is None else max(self.max_epochs, epochs)
        return self.replace(epochs=epochs, rungs=rungs, warmup_epochs=self.warmup_epochs * epochs / self.epochs,
                            max_epochs=ceiling)

    def for_start(self, epochs: int | None = None) -> "Schedule":
        """This schedule for one network trained alone (no rungs), ``epochs`` long.

        By default the search's start: ``start_epochs`` when set, else unchanged.
        """
        epochs = self.start_epochs if epochs is None else epochs
        if epochs is None or epochs == self.epochs and self.rungs is None:
            return self
        return self.replace(epochs=epochs, rungs=None, step_compute=None, max_epochs=None,
                            warmup_epochs=self.warmup_epochs * epochs / self.epochs)

    def path_epochs(self, start_gflops: float, base_gflops: float, clips: int) -> int:
        """Epochs an inheriting search has trained a network of ``base_gflops`` by the time it expands it.

        The start (``start_gflops``) trains :meth:`for_start` epochs; each step about doubles the cost
        and adds its :meth:`for_step` epochs, over ``round(log2(base / start))`` steps.
        """
        steps = round(math.log2(base_gflops / start_gflops)) if base_gflops > start_gflops > 0 else 0
        return self.for_start().epochs + sum(self.for_step(start_gflops * 2 ** k, clips).epochs
                                             for k in range(1, steps + 1))

    def epoch_range(self) -> tuple[int, int]:
        """Fewest and most epochs a search step can train (:meth:`for_step` over every cost)."""
        counts = [self.epochs, *(e for _, e in self.epochs_under or ())]
        if self.step_compute is not None:
            counts.append(self.max_epochs if self.max_epochs is not None else self.epochs)
        return min(counts), max(counts)

    def train_crop(self, config: X3DConfig) -> int:
        """The side the network trains and evaluates at: its crop times ``spatial_scale``, at least 16."""
        return max(MIN_TRAIN_CROP, int(round(config.crop * self.spatial_scale)))

    def lr(self) -> float:
        """Peak learning rate: ``base_lr`` scaled linearly from ``ref_batch_size`` to ``batch_size``."""
        return self.base_lr * self.batch_size / self.ref_batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, numbers) suitable for YAML/JSON and Ray trial parameters."""
        out = dataclasses.asdict(self)
        out["eval_views"] = list(self.eval_views)
        out["rungs"] = list(self.rungs) if self.rungs is not None else None
        out["epochs_under"] = [list(p) for p in self.epochs_under] if self.epochs_under is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schedule":
        """Build from a mapping; unknown keys are an error, missing keys take the defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a schedule must be a mapping of field: value, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"schedule {data.get('name', '?')!r}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "Schedule":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _check_int(where: str, name: str, value: Any, low: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low >= 1 else "a non-negative integer"
        raise ConfigError(f"{where}: {name} must be {kind}{hint}, got {value!r}")


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


def _shipped() -> dict[str, Any]:
    text = resources.files("x3dsearch.search_spaces").joinpath(_SHIPPED).read_text()
    return yaml.safe_load(text)["schedules"]


def schedule_names(kind: Literal["proxy", "full"] | None = None) -> list[str]:
    """Names of the schedules shipped in ``schedules.yaml``: all, or of one ``kind``.

    A proxy schedule's name holds ``proxy``, a full (final) training's ends in ``_full``.
    """
    names = list(_shipped())
    if kind is None:
        return names
    return [n for n in names if ("proxy" in n.split("_") if kind == "proxy" else n.endswith("_full"))]


def load_schedule(name_or_path: str | Path | Schedule) -> Schedule:
    """A shipped schedule by name (e.g. ``cpu_proxy``) or a YAML file holding one schedule mapping."""
    if isinstance(name_or_path, Schedule):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"schedule file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: a schedule file must hold a mapping of field: value")
        try:
            return Schedule.from_dict({"name": path.stem, **data})
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    shipped = _shipped()
    if str(name_or_path) not in shipped:
        raise ConfigError(f"unknown schedule {str(name_or_path)!r}; choose from {', '.join(shipped)} or give a YAML file")
    return Schedule.from_dict({"name": str(name_or_path), **shipped[str(name_or_path)]})
