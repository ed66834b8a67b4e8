"""The architecture as data: a frozen, serialisable X3D configuration.

An :class:`X3DConfig` fully determines a network (see :mod:`x3dsearch.model`) and its
cost (see :mod:`x3dsearch.cost`). Presets are entries of ``search_spaces/presets.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .fields import load_yaml, read_yaml

__all__ = ["X3DConfig", "ConfigError", "preset", "preset_names", "round_width", "stage_layout"]

_FACTOR_DIGITS = 6


@dataclass(frozen=True)
class X3DConfig:
    """The six X3D axes plus the X2D basis they scale.

    ``stride`` is γτ (frames skipped between sampled frames, at the source frame rate),
    ``frames`` is γt, ``crop`` is the spatial side in pixels (γs=1 is 112), ``width``,
    ``bottleneck`` and ``depth`` are γw, γb and γd.
    """

    stride: int = 16
    frames: int = 1
    crop: int = 112
    width: float = 1.0
    bottleneck: float = 1.0
    depth: float = 1.0
    num_classes: int = 400
    stem_width: int = 12
    stage_blocks: tuple[int, ...] = (1, 2, 5, 3)
    head_width: int = 2048
    se_ratio: float = 0.0625
    dropout: float = 0.5

    def __post_init__(self) -> None:
        for name in ("stride", "frames", "crop", "num_classes", "stem_width", "head_width"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value != int(value) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("width", "bottleneck", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, round(float(value), _FACTOR_DIGITS))
        blocks = self.stage_blocks
        if isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__iter__"):
            raise ConfigError(f"stage_blocks must be a list of positive integers, got {blocks!r}")
        blocks = tuple(blocks)
        if not blocks or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks):
            raise ConfigError(f"stage_blocks must be a list of positive integers, got {list(blocks)!r}")
        object.__setattr__(self, "stage_blocks", blocks)
        for name in ("se_ratio", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists, numbers) suitable for YAML/JSON."""
        out = dataclasses.asdict(self)
        out["stage_blocks"] = list(self.stage_blocks)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "X3DConfig":
        """Build from a mapping; unknown keys are an error, missing keys take the X2D basis."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping of field: value, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Return the YAML text; also write it to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "X3DConfig":
        """Read a config YAML (or JSON) file written by :meth:`to_yaml` or by hand."""
        path = Path(path)
        data = read_yaml(path, "config file")
        if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
            data = data["model"]
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "X3DConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def key(self) -> str:
        """Canonical form: equal for configs that build the same network on the same input."""
        return self.to_json()

    @property
    def short(self) -> str:
        """Human-readable one-liner, e.g. ``16x5 224px w2 b2.25 d2.2``."""
        return (f"{self.frames}x{self.stride} {self.crop}px w{self.width:g} "
                f"b{self.bottleneck:g} d{self.depth:g}")


def round_width(width: float, multiplier: float, divisor: int = 8, min_width: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor``, never below 90%."""
    scaled = width * multiplier
    out = max(min_width, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


def stage_layout(config: X3DConfig) -> list[tuple[int, int, int]]:
    """Per residual stage: (blocks, output width, inner width), as the generator builds them."""
    layout = []
    for i, base_blocks in enumerate(config.stage_blocks):
        base_width = config.stem_width * 2 ** i
        out_width = round_width(base_width, config.width)
        inner = int(config.bottleneck * out_width)
        blocks = int(math.ceil(config.depth * base_blocks))
        layout.append((blocks, out_width, inner))
    return layout


def _load_presets() -> dict[str, X3DConfig]:
    data = load_yaml(resources.files("x3dsearch.search_spaces").joinpath("presets.yaml").read_text())
    return {name: X3DConfig.from_dict(entry) for name, entry in data["presets"].items()}


_PRESETS: dict[str, X3DConfig] | None = None


def preset_names() -> list[str]:
    """Names of the shipped presets, cheapest first (X2D, XS, S, M, L, XL)."""
    global _PRESETS
    if _PRESETS is None:
        _PRESETS = _load_presets()
    return list(_PRESETS)


def preset(name: str, **overrides: Any) -> X3DConfig:
    """A named preset (case-insensitive), optionally with fields overridden."""
    names = preset_names()
    assert _PRESETS is not None
    match = {n.upper(): n for n in names}.get(name.upper())
    if match is None:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(names)}")
    config = _PRESETS[match]
    return config.replace(**overrides) if overrides else config
