"""Keep freed memory in the process's heap (glibc), so that each CPU training step reuses pages already mapped.

glibc returns blocks above its mmap threshold (128 KB, rising to at most 32 MB) to the OS when they
are freed and trims the heap's top, so each step faults its activations' pages in again, and the
kernel zeroes each page (``experiments/bench_alloc.py`` counts and times them). The setting is
process-wide and lasts: the process, and those forked from it later (e.g. DataLoader workers),
keep their peak heap. :func:`x3dsearch.train` sets it for CPU training; ``X3DSEARCH_KEEP_MEMORY=0``
turns it off; without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

from .switches import switched_on

__all__ = ["keep_freed_memory", "ENV_VAR"]

ENV_VAR = "X3DSEARCH_KEEP_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and go back to it
_TRIM_THRESHOLD = (1 << 31) - 1  # never trim the heap's top (the largest value mallopt takes)


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
    """Set glibc's thresholds (once per process); whether glibc took both (older versions refuse 1 GiB)."""
    mallopt = _libc_mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 1 GiB in the heap for reuse (idempotent); True if set.

    Sets nothing and returns False with ``$X3DSEARCH_KEEP_MEMORY=0``, without glibc, or if glibc refuses.
    """
    return switched_on(ENV_VAR) and _set_once()
