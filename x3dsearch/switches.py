"""Default-on features switched off from the environment, all spelled alike (``X3DSEARCH_FAST_CONV=0``)."""

from __future__ import annotations

import os

__all__ = ["switched_on"]

_OFF = ("0", "false", "no", "off")


def switched_on(name: str) -> bool:
    """Whether the environment leaves the feature ``name`` on: unset, or anything but 0, false, no or off."""
    return os.environ.get(name, "").strip().lower() not in _OFF
