"""Checks of the fields of data files (recipes, proxy policies), each failing with one line naming the field."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

__all__ = ["check_int", "number"]


def check_int(where: str, name: str, value: Any, low: int, hint: str = "") -> None:
    """Refuse anything but an integer of at least ``low`` (a bool is no integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low >= 1 else "a non-negative integer"
        raise ConfigError(f"{where}: {name} must be {kind}{hint}, got {value!r}")


def number(where: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)
