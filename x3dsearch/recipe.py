"""How one training runs, as data: a frozen :class:`Recipe` (length, data subset, input scale, optimiser,
evaluation views). One loop (:func:`x3dsearch.train.train`) serves every recipe; which recipe a search's
candidates get is the proxy policy's business (:mod:`x3dsearch.proxy_policy`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .config import X3DConfig
from .errors import ConfigError
from .fields import check_int, number

__all__ = ["Recipe", "MIN_TRAIN_CROP", "OPTIMIZERS", "UNWRITTEN_DEFAULTS"]

MIN_TRAIN_CROP = 16
_PRECISIONS = ("fp32", "bf16", "auto")
OPTIMIZERS = ("sgd", "adamw")
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
class Recipe:
    """How one training runs; ``docs/schedules.md`` describes each field.

    ``base_lr`` is the learning rate at ``ref_batch_size`` (scaled linearly to ``batch_size``);
    ``spatial_scale`` trains and evaluates at ``round(crop * spatial_scale)`` px (at least 16);
    the first ``coarse_epochs`` train on clips average-pooled up to ``coarse_factor``× per side, a cheaper start.
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
    coarse_epochs: int = 0
    coarse_factor: int = 2
    time_budget_s: float | None = None
    channels_last: bool = True
    precision: str = "auto"
    num_workers: int = 0
    cache: bool = False
    precise_bn_clips: int = 0

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"schedule name must be a non-empty string, got {self.name!r}")
        for field_name in ("epochs", "batch_size", "ref_batch_size"):
            check_int(where, field_name, getattr(self, field_name), low=1)
        check_int(where, "num_workers", self.num_workers, low=0)
        check_int(where, "precise_bn_clips", self.precise_bn_clips, low=0)
        check_int(where, "coarse_factor", self.coarse_factor, low=1)
        check_int(where, "coarse_epochs", self.coarse_epochs, low=0)
        if self.coarse_epochs >= self.epochs:
            raise ConfigError(f"{where}: coarse_epochs ({self.coarse_epochs}) must leave at least one of the "
                              f"{self.epochs} epochs at the full side")
        for field_name in ("train_videos", "val_videos"):
            if getattr(self, field_name) is not None:
                check_int(where, field_name, getattr(self, field_name), low=1, hint=" or null for all")
        for field_name, (rule, ok) in _RANGES.items():
            value = getattr(self, field_name)
            if value is None and field_name == "time_budget_s":
                continue
            value = number(where, field_name, value)
            if not ok(value):
                raise ConfigError(f"{where}: {field_name} must be {rule}, got {value!r}")
            object.__setattr__(self, field_name, value)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"{where}: warmup_epochs ({self.warmup_epochs:g}) exceeds epochs ({self.epochs})")
        views = self.eval_views
        if isinstance(views, (str, bytes)) or not hasattr(views, "__len__") or len(views) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in views):
            raise ConfigError(f"{where}: eval_views must be [temporal, spatial] positive integers, got {views!r}")
        if views[1] not in (1, 3):
            raise ConfigError(f"{where}: eval_views' spatial crops must be 1 (center) or 3 (left, center, right), "
                              f"got {views[1]}")
        object.__setattr__(self, "eval_views", (int(views[0]), int(views[1])))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"{where}: precision must be one of {', '.join(_PRECISIONS)}, got {self.precision!r}")
        for field_name in ("channels_last", "cache"):
            if not isinstance(getattr(self, field_name), bool):
                raise ConfigError(f"{where}: {field_name} must be true or false, got {getattr(self, field_name)!r}")

    def train_crop(self, config: X3DConfig) -> int:
        """The side the network trains and evaluates at: its crop times ``spatial_scale``, at least 16."""
        return max(MIN_TRAIN_CROP, int(round(config.crop * self.spatial_scale)))

    def coarse_pool(self, config: X3DConfig) -> int:
        """How many times per side the first ``coarse_epochs`` pool ``config``'s clips: ``coarse_factor``, less
        where that would go under 16 px; 1 (no pooling) without a coarse start or for a side under 32 px."""
        if not self.coarse_epochs:
            return 1
        return max(1, min(self.coarse_factor, self.train_crop(config) // MIN_TRAIN_CROP))

    def with_epochs(self, epochs: int, **changes: Any) -> "Recipe":
        """This recipe ``epochs`` long, its coarse start scaled in proportion, with ``changes`` (the rest as given)."""
        coarse = min(epochs - 1, round(self.coarse_epochs * epochs / self.epochs))
        return self.replace(epochs=epochs, coarse_epochs=coarse, **changes)

    def scored_views(self) -> tuple[int, int]:
        """The (windows, crops) a test scores: with the clip cache's square frames the three crops are one."""
        return (self.eval_views[0], 1) if self.cache else self.eval_views

    def lr(self) -> float:
        """Peak learning rate: ``base_lr`` scaled linearly from ``ref_batch_size`` to ``batch_size``."""
        return self.base_lr * self.batch_size / self.ref_batch_size

    def stretched(self, epochs: int) -> "Recipe":
        """This recipe ``epochs`` long, its warm-up and coarse start stretched in proportion."""
        return self.with_epochs(epochs, warmup_epochs=self.warmup_epochs * epochs / self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, numbers) suitable for YAML/JSON and Ray trial parameters; the coarse start's
        fields only when it is on, so checkpoints, run.yaml files and digests from before them match."""
        out = dict(dataclasses.asdict(self), eval_views=list(self.eval_views))
        if not self.coarse_epochs:
            for name in UNWRITTEN_DEFAULTS:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """Build from a mapping of recipe fields; unknown keys are an error, missing keys take the defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a schedule must be a mapping of field: value, got {type(data).__name__}")
        unknown = sorted(set(data) - set(RECIPE_FIELDS))
        if unknown:
            raise ConfigError(f"schedule {data.get('name', '?')!r}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(RECIPE_FIELDS))}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
UNWRITTEN_DEFAULTS = {"coarse_epochs": 0, "coarse_factor": 2}  # what a recipe mapping without them means
