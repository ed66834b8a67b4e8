"""Keep freed memory in the process's heap (glibc), so that each CPU training step reuses pages already mapped.

By default glibc hands blocks above its mmap threshold (128 KB, rising to at most 32 MB) back to the
OS when they are freed, and trims the heap's top. A training step frees and reallocates the same
activation-sized blocks every step, so each step faults their pages in again and the kernel zeroes
every page: 29,000-36,000 minor faults per X3D-M step at 16x56 px, 67,000-74,000 per XS step at
4x160 px (``experiments/bench_alloc.py``). :func:`keep_freed_memory` raises both thresholds, so that freed
blocks stay in the heap for the next step.

The setting is process-wide and lasts: the process keeps its peak heap instead of returning it to
the OS, and so do processes forked from it later (e.g. DataLoader workers). :func:`x3dsearch.train`
sets it for CPU training (so every proxy and final training x3dsearch runs has it); a user's own CPU
training loop can call it once. ``X3DSEARCH_KEEP_MEMORY=0`` turns it off; without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Callable

__all__ = ["keep_freed_memory", "ENV_VAR"]

ENV_VAR = "X3DSEARCH_KEEP_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and go back to it
_OLD_GLIBC_MMAP_THRESHOLD = 32 << 20  # the most that older glibc versions accept (mallopt(3))
_TRIM_THRESHOLD = (1 << 31) - 1  # never trim the heap's top (the largest value mallopt takes)


def _enabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _libc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None elsewhere (musl's is a no-op; macOS and Windows have none)."""
    try:
        process = ctypes.CDLL(None)  # the symbols already loaded: the C library's among them
    except (OSError, TypeError):  # Windows
        return None
    if not (hasattr(process, "gnu_get_libc_version") and hasattr(process, "mallopt")):  # not glibc
        return None
    mallopt = process.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


@functools.cache
def _set_once() -> bool:
    """Set glibc's thresholds (once per process); whether glibc took them."""
    mallopt = _libc_mallopt()
    if mallopt is None:
        return False
    took_mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, _OLD_GLIBC_MMAP_THRESHOLD)
    return bool(took_mmap) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks (up to 1 GiB; 32 MB on older glibc) in the heap for reuse; True if set.

    Idempotent. Sets nothing and returns False with ``$X3DSEARCH_KEEP_MEMORY=0`` or without glibc.
    """
    return _enabled() and _set_once()
