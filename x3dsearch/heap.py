"""Keep freed memory in the process's heap (glibc), so each training step reuses pages already mapped.

By default glibc hands blocks above its mmap threshold (128 KB, rising to at most 32 MB) back to the
OS when they are freed, and trims the heap's top. A training step frees and reallocates the same
activation-sized blocks every step, so each step faults their pages in again and the kernel zeroes
every page: 16k-64k minor faults per X3D-M step at the CPU proxy's input. :func:`keep_freed_memory`
raises both thresholds so that freed blocks stay in the heap for the next step. The cost is that the
process keeps its peak heap instead of returning it to the OS. ``experiments/bench_alloc.py``
measures the effect.

:func:`x3dsearch.build_model` calls it when it builds a model with the fast CPU kernels (so every
training x3dsearch runs has it, and so does a user's own loop). ``X3DSEARCH_KEEP_MEMORY=0`` turns it
off; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Callable

__all__ = ["keep_freed_memory", "ENV_VAR"]

ENV_VAR = "X3DSEARCH_KEEP_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and go back to it
_TRIM_THRESHOLD = (1 << 31) - 1  # never trim the heap's top (the largest value mallopt takes)


def _enabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _libc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None elsewhere (musl's is a no-op; macOS and Windows have none)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library found
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):  # not glibc
        return None
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


@functools.cache
def _set_once() -> bool:
    """Sets glibc's thresholds once per process; False where that is not possible."""
    mallopt = _libc_mallopt()
    if mallopt is None:
        return False
    # older glibc refuses an mmap threshold above 32 MB
    mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(mmap and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks up to 1 GiB in the heap (once per process); whether it is in effect.

    Off with ``$X3DSEARCH_KEEP_MEMORY=0`` and where the C library has no ``mallopt``.
    """
    return _enabled() and _set_once()
