"""Search spaces and the expansion operators: pure functions from a config to the next ones.

A search space (``search_spaces/*.yaml``) names a start config and, per axis, the config
fields one expansion step scales and by how much. ``expand(config, axis)`` takes a full
step; ``expand(config, axis, fraction=f)`` a partial one, as backward contraction needs.
An axis that scales both frames and stride rounds the stride first and then takes the frames
that keep the step's window (frames x stride): X-Fast keeps the duration, X-Temporal grows it.

A space's box (its ``bounds`` and ``max_window``, the longest window the data's videos hold) is
kept by :func:`bounded_step`: a full step that would leave it becomes a partial step up to the
bound it crosses, and an axis already at that bound has no step. A space's ``step_cost`` caps one
step's cost the same way (at most that multiple of its base's FLOPs), so that a step's candidates
cost about the same and are compared at equal cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from .config import ConfigError, X3DConfig, preset
from .cost import count_flops
from .fields import load_yaml, read_yaml

__all__ = ["SearchSpace", "AXES", "DISCRETE_FIELDS", "load_space", "expand", "candidates", "window",
           "crossed_bound", "bounded_step", "box_top", "describe_box", "window_limit_text"]

AXES = ("fast", "temporal", "spatial", "depth", "width", "bottleneck")
_SPACE_KEYS = ("name", "start", "axes", "crop_multiple", "bounds", "max_window", "step_cost")
_SCALABLE = ("stride", "frames", "crop", "width", "bottleneck", "depth")
DISCRETE_FIELDS = ("stride", "frames", "crop")  # integers: a partial step rounds them
_DEFAULT_SPACE = "x3d_kinetics"


@dataclass(frozen=True)
class SearchSpace:
    """Start config, per-axis field multipliers, the spatial rounding step, optional bounds, the longest
    window (frames x stride, in source frames at the 30 fps reference; None: no limit) and the most one
    step may multiply its base's FLOPs by (``step_cost``; None: no cap)."""

    name: str
    start: X3DConfig
    axes: Mapping[str, Mapping[str, float]]
    crop_multiple: int = 8
    bounds: Mapping[str, tuple[float, float]] | None = None
    max_window: float | None = None
    step_cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "start": self.start.to_dict(), "crop_multiple": self.crop_multiple,
               "axes": {a: dict(f) for a, f in self.axes.items()}}
        if self.bounds is not None:
            out["bounds"] = {n: list(b) for n, b in self.bounds.items()}
        if self.max_window is not None:
            out["max_window"] = self.max_window
        if self.step_cost is not None:
            out["step_cost"] = self.step_cost
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search space") -> "SearchSpace":
        """Validate and build; every problem is a one-line :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping with name, start and axes")
        missing = [k for k in ("name", "start", "axes") if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        unknown = sorted(str(k) for k in data if k not in _SPACE_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; a space has {', '.join(_SPACE_KEYS)}")
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
                if not (_is_number(mult) and 0 < mult < math.inf):
                    raise ConfigError(f"{source}: axis {axis!r}: multiplier of {name} must be a finite number > 0, "
                                      f"got {mult!r}")
            if not any(m > 1 for n, m in fields.items() if n != "stride"):
                raise ConfigError(f"{source}: axis {axis!r} does not increase the cost")
            clean[str(axis)] = {str(n): float(m) for n, m in fields.items()}
        multiple = data.get("crop_multiple", 8)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(f"{source}: crop_multiple must be a positive integer")
        bounds = data.get("bounds")
        max_window = data.get("max_window")
        if max_window is not None and not (_is_number(max_window) and max_window > 0):
            raise ConfigError(f"{source}: max_window must be a number of source frames > 0 (the longest "
                              f"frames x stride) or absent, got {max_window!r}")
        step_cost = data.get("step_cost")
        if step_cost is not None and not (_is_number(step_cost) and step_cost > 1):
            raise ConfigError(f"{source}: step_cost must be a number > 1 (the most one step multiplies the "
                              f"cost by) or absent, got {step_cost!r}")
        return cls(str(data["name"]), start_config, clean, multiple,
                   None if bounds is None else _check_bounds(bounds, multiple, source),
                   max_window=None if max_window is None else float(max_window),
                   step_cost=None if step_cost is None else float(step_cost))


def _is_number(value: Any) -> bool:
    """An int or float that is not a bool (YAML's true/false would pass ``isinstance(v, int)``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
        data, source = read_yaml(path, "search space file"), str(path)
    else:
        shipped = resources.files("x3dsearch.search_spaces").joinpath(f"{name_or_path}.yaml")
        if not shipped.is_file():
            raise ConfigError(f"unknown search space {str(name_or_path)!r}: not a shipped name or a file")
        data, source = load_yaml(shipped.read_text()), f"{name_or_path}.yaml"
    return SearchSpace.from_dict(data, source)


def _rounded(exact: Mapping[str, float], crop_multiple: int) -> dict[str, float | int]:
    """Round a step's exact field values: the stride first, then the frames that keep its window."""
    out: dict[str, float | int] = {}
    for name, value in exact.items():
        if name == "crop":
            out[name] = max(crop_multiple, int(round(value / crop_multiple)) * crop_multiple)
        elif name in ("frames", "stride"):
            out[name] = max(1, int(round(value)))
        else:
            out[name] = value
    if "frames" in exact and "stride" in exact:
        out["frames"] = max(1, int(round(exact["frames"] * exact["stride"] / out["stride"])))
    return out


def expand(config: X3DConfig, axis: str, fraction: float = 1.0,
           space: SearchSpace | None = None) -> X3DConfig:
    """Scale one axis: ``fraction=1`` is a full step, ``0 < fraction < 1`` a partial one.

    Each field of the axis is multiplied by ``multiplier ** fraction``; the crop rounds to the space's
    ``crop_multiple``, the stride to an integer, and the frames to the step's window over that stride.
    """
    space = space or load_space()
    if axis not in space.axes:
        raise ConfigError(f"unknown axis {axis!r}; this space has {', '.join(space.axes)}")
    if not 0 < fraction <= 1 or math.isnan(fraction):
        raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
    exact = {name: getattr(config, name) * mult ** fraction for name, mult in space.axes[axis].items()}
    return config.replace(**_rounded(exact, space.crop_multiple))


def candidates(config: X3DConfig, space: SearchSpace) -> dict[str, X3DConfig]:
    """One full-step expansion of ``config`` per axis of the space (unbounded: see :func:`bounded_step`)."""
    return {axis: expand(config, axis, space=space) for axis in space.axes}


def window(config: X3DConfig) -> int:
    """Source frames a clip spans (frames x stride, at the 30 fps reference)."""
    return config.frames * config.stride


def crossed_bound(base: X3DConfig, config: X3DConfig, space: SearchSpace) -> str | None:
    """The bound ``config`` crosses in a field changed from ``base`` (e.g. ``"frames <= 16"``), or None.

    The window counts when frames or stride changed and the space has a ``max_window``; the cost when
    the space has a ``step_cost`` (``"cost <= 2x its base"``).
    """
    for name, (low, high) in (space.bounds or {}).items():
        value = getattr(config, name)
        if value != getattr(base, name) and not low <= value <= high:
            return f"{name} <= {high:g}" if value > high else f"{name} >= {low:g}"
    timing = (config.frames, config.stride) != (base.frames, base.stride)
    if timing and space.max_window is not None and window(config) > space.max_window:
        return f"window <= {space.max_window:g} frames"
    if space.step_cost is not None and count_flops(config) > space.step_cost * count_flops(base):
        return f"cost <= {space.step_cost:g}x its base"
    return None


def bounded_step(base: X3DConfig, axis: str, space: SearchSpace,
                 iterations: int = 40) -> tuple[X3DConfig, float, str]:
    """The step of ``axis`` inside the space's box: (config, fraction, the bound that cut it or "").

    A full step that crosses a bound becomes the largest partial step that does not (bisection on
    the fraction). A step that does not raise the cost is none: ``(base, 0.0, bound)``, the bound ""
    when even the full step rounds to no more cost (e.g. X-Fast at stride 1).
    """
    bound = crossed_bound(base, expand(base, axis, space=space), space) or ""
    lo = 1.0
    if bound:
        lo, hi = 0.0, 1.0
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if crossed_bound(base, expand(base, axis, mid, space), space) is None else (lo, mid)
    config = expand(base, axis, lo, space) if lo > 0 else base
    if count_flops(config) <= count_flops(base):
        return base, 0.0, bound
    return config, lo, bound


def box_top(space: SearchSpace, enough: float, cost: Callable[[X3DConfig], float] = count_flops) -> X3DConfig:
    """The config reached from the space's start by stepping every axis in turn up to its bounds, stopping
    as soon as it costs ``enough`` by ``cost`` (FLOPs by default; a space without bounds grows for ever)."""
    config, moved = space.start, True
    while moved and cost(config) < enough:
        moved = False
        for axis in space.axes:
            step, fraction, _ = bounded_step(config, axis, space)
            if fraction > 0:
                config, moved = step, True
    return config


def describe_box(space: SearchSpace) -> list[str]:
    """The space's box as lines: each field's bounds and the longest window."""
    lines = [f"  {name:<11} {low:g}..{high:g}" for name, (low, high) in (space.bounds or {}).items()] or \
        ["  fields     unbounded (the space has no 'bounds:')"]
    return lines + [f"  {'window':<11} {window_limit_text(space)}"]


def window_limit_text(space: SearchSpace) -> str:
    """The window limit in words, e.g. ``<= 120 source frames (frames x stride)``."""
    limit = "no limit" if space.max_window is None else f"<= {space.max_window:g} source frames"
    return f"{limit} (frames x stride)"
