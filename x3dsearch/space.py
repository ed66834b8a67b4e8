"""Search spaces and the expansion operators: pure functions from a config to the next ones.

A search space (``search_spaces/*.yaml``) names a start config and, per axis, the config
fields one expansion step scales and by how much. ``expand(config, axis)`` takes a full
step; ``expand(config, axis, fraction=f)`` a partial one, as backward contraction needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import ConfigError, X3DConfig, preset

__all__ = ["SearchSpace", "AXES", "DISCRETE_FIELDS", "load_space", "expand", "candidates"]

AXES = ("fast", "temporal", "spatial", "depth", "width", "bottleneck")
_SCALABLE = ("stride", "frames", "crop", "width", "bottleneck", "depth")
DISCRETE_FIELDS = ("stride", "frames", "crop")  # integers: a partial step rounds them
_DEFAULT_SPACE = "x3d_kinetics"


@dataclass(frozen=True)
class SearchSpace:
    """Start config, per-axis field multipliers, the spatial rounding step and optional bounds."""

    name: str
    start: X3DConfig
    axes: Mapping[str, Mapping[str, float]]
    crop_multiple: int = 8
    bounds: Mapping[str, tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "start": self.start.to_dict(), "crop_multiple": self.crop_multiple,
               "axes": {a: dict(f) for a, f in self.axes.items()}}
        if self.bounds is not None:
            out["bounds"] = {n: list(b) for n, b in self.bounds.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search space") -> "SearchSpace":
        """Validate and build; every problem is a one-line :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping with name, start and axes")
        missing = [k for k in ("name", "start", "axes") if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        start = data["start"]
        try:
            start_config = preset(start) if isinstance(start, str) else X3DConfig.from_dict(start)
        except ConfigError as err:
            raise ConfigError(f"{source}: start: {err}") from None
        axes = data["axes"]
        if not isinstance(axes, Mapping) or not axes:
            raise ConfigError(f"{source}: axes must be a non-empty mapping of axis: {{field: multiplier}}")
        clean: dict[str, dict[str, float]] = {}
        for axis, fields in axes.items():
            if not isinstance(fields, Mapping) or not fields:
                raise ConfigError(f"{source}: axis {axis!r} must map config fields to multipliers")
            for name, mult in fields.items():
                if name not in _SCALABLE:
                    raise ConfigError(f"{source}: axis {axis!r} scales unknown field {name!r}; "
                                      f"scalable fields: {', '.join(_SCALABLE)}")
                if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult <= 0:
                    raise ConfigError(f"{source}: axis {axis!r}: multiplier of {name} must be > 0")
            if not any(m > 1 for n, m in fields.items() if n != "stride"):
                raise ConfigError(f"{source}: axis {axis!r} does not increase the cost")
            clean[str(axis)] = {str(n): float(m) for n, m in fields.items()}
        multiple = data.get("crop_multiple", 8)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(f"{source}: crop_multiple must be a positive integer")
        bounds = data.get("bounds")
        return cls(str(data["name"]), start_config, clean, multiple,
                   None if bounds is None else _check_bounds(bounds, multiple, source))


def _check_bounds(bounds: Any, crop_multiple: int, source: str) -> dict[str, tuple[float, float]]:
    """``{field: [low, high]}`` for all six scalable fields; integer fields take integers."""
    if not isinstance(bounds, Mapping) or set(bounds) != set(_SCALABLE):
        raise ConfigError(f"{source}: bounds must map each of {', '.join(_SCALABLE)} to [low, high]")
    clean: dict[str, tuple[float, float]] = {}
    for name in _SCALABLE:
        pair = bounds[name]
        integer = name in DISCRETE_FIELDS
        kinds = (int,) if integer else (int, float)
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, kinds) for v in pair)
                or not 0 < pair[0] <= pair[1]):
            kind = "integers" if integer else "numbers"
            raise ConfigError(f"{source}: bounds of {name} must be [low, high] {kind} with 0 < low <= high")
        if name == "crop" and any(v % crop_multiple for v in pair):
            raise ConfigError(f"{source}: bounds of crop must be multiples of crop_multiple ({crop_multiple})")
        clean[name] = (pair[0], pair[1]) if integer else (float(pair[0]), float(pair[1]))
    return clean


def load_space(name_or_path: str | Path = _DEFAULT_SPACE) -> SearchSpace:
    """A shipped space by name (e.g. ``x3d_kinetics``) or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"search space file not found: {path}")
        text, source = path.read_text(), str(path)
    else:
        shipped = resources.files("x3dsearch.search_spaces").joinpath(f"{name_or_path}.yaml")
        if not shipped.is_file():
            raise ConfigError(f"unknown search space {str(name_or_path)!r}: not a shipped name or a file")
        text, source = shipped.read_text(), f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err.__class__.__name__})") from None
    return SearchSpace.from_dict(data, source)


def _scaled(config: X3DConfig, name: str, scale: float, crop_multiple: int) -> float | int:
    value = getattr(config, name) * scale
    if name == "crop":
        return max(crop_multiple, int(round(value / crop_multiple)) * crop_multiple)
    if name in ("frames", "stride"):
        return max(1, int(round(value)))
    return value


def expand(config: X3DConfig, axis: str, fraction: float = 1.0,
           space: SearchSpace | None = None) -> X3DConfig:
    """Scale one axis: ``fraction=1`` is a full step, ``0 < fraction < 1`` a partial one.

    Each field of the axis is multiplied by ``multiplier ** fraction``; frames and stride
    round to integers, the crop to the space's ``crop_multiple``.
    """
    space = space or load_space()
    if axis not in space.axes:
        raise ConfigError(f"unknown axis {axis!r}; this space has {', '.join(space.axes)}")
    if not 0 < fraction <= 1 or math.isnan(fraction):
        raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
    changes = {name: _scaled(config, name, mult ** fraction, space.crop_multiple)
               for name, mult in space.axes[axis].items()}
    return config.replace(**changes)


def candidates(config: X3DConfig, space: SearchSpace) -> dict[str, X3DConfig]:
    """One full-step expansion of ``config`` per axis of the space."""
    return {axis: expand(config, axis, space=space) for axis in space.axes}
