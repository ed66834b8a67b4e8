"""Reading and checking data files (configs, spaces, schedules, run records): one line naming the file or field
for every mistake."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["check_int", "load_yaml", "number", "read_yaml"]


class _Loader(yaml.SafeLoader):
    """The safe loader, reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants ``1.0e-3``; people write both)."""


_EXPONENT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's exponent floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, what: str, *, exponent_floats: bool = True) -> Any:
    """The data of a YAML (or JSON) file; missing, a folder, unreadable, not text or not YAML is a ConfigError.
    ``exponent_floats=False`` reads as ``yaml.safe_dump`` wrote (``12e4`` stays a string), for files we write."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return load_yaml(text) if exponent_floats else yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file") from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None


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
