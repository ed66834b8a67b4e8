"""x3dsearch.heap: with freed memory kept, reallocating large blocks faults no pages in; glibc's defaults do.

The allocator is set per process and stays set, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from x3dsearch import heap

# A training step's pattern of allocation: four 48 MB blocks (12,288 pages each, or 24 huge pages
# where transparent huge pages are always on; glibc's defaults always mmap blocks above 32 MB) alive
# at once, written, then all freed. Prints the minor page faults of each of 16 such steps,
# keep_freed_memory() called first. Kept, the heap still grows a block or two at a time while it
# settles into the pattern (in 150 runs here the last such step was the 8th), so the median of steps
# 9-16 counts: it holds even if up to three of them still grow.
_PROBE = """
import resource, torch
from x3dsearch import heap
heap.keep_freed_memory()
def step():
    blocks = [torch.empty(12 << 20) for _ in range(4)]
    for block in blocks:
        block.fill_(1.0)
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_step(keep: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, heap.ENV_VAR: keep},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [int(word) for word in out.stdout.split()]


@pytest.mark.skipif(heap._libc_mallopt() is None, reason="needs glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults() -> None:
    # switched off (the control), glibc's defaults fault every page in again: 4 x 12,288 a step
    kept, off = _faults_per_step("1"), _faults_per_step("0")
    assert sorted(kept[8:])[4] < 100 < sorted(off[8:])[4], (kept, off)


def test_switched_off_it_reports_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.ENV_VAR, "0")
    assert not heap.keep_freed_memory()
