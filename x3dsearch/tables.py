"""Configs as table rows, in one place: the columns a config's shape takes (the report's tables) and the fixed-width
text of a path of configs (the live view's summary, Optuna's best trials, the presets)."""

from __future__ import annotations

import re
from typing import Any, Iterable

from .config import X3DConfig

__all__ = ["SHAPE", "shape_columns", "config_table"]

SHAPE = ("frames x stride", "crop", "γw", "γb", "γd")


def shape_columns(config: X3DConfig) -> dict[str, Any]:
    """A config's shape as named columns: frames x stride, crop, and the width, bottleneck and depth factors."""
    return dict(zip(SHAPE, (f"{config.frames}x{config.stride}", config.crop, config.width, config.bottleneck,
                            config.depth)))


def config_table(head: str, rows: Iterable[tuple[str, X3DConfig, float, Any]], last: str = "proxy top1", *,
                 factors: str = ">7.3g", gflops: str = ">10.4f", last_format: str = ">12") -> str:
    """Configs as fixed-width text under a header: each row's lead text (as wide as ``head``), the config's shape,
    its GFLOPs and a ``last`` column; ``factors``, ``gflops`` and ``last_format`` are format specs."""
    formats = [">16", ">6", factors, factors, factors, gflops, last_format]
    names = [*SHAPE, "GFLOPs", last]
    lines = [head + "".join(f"{name:{_aligned(spec)}}" for name, spec in zip(names, formats))]
    for lead, config, cost, value in rows:
        values = [*shape_columns(config).values(), cost, value]
        lines.append(lead + "".join(f"{v:{spec}}" for v, spec in zip(values, formats)))
    return "\n".join(lines)


def _aligned(spec: str) -> str:
    """A format spec's alignment and width alone (``>7.3g`` -> ``>7``): how its column's header is placed."""
    match = re.match(r"[<>^]?\d*", spec)
    return match.group(0) if match else ""
