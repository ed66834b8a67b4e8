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
# at once, written, then all freed. Prints the minor page faults of three such steps after five (the
# heap takes a few to settle), keep_freed_memory() called first.
_PROBE = """
import resource, torch
from x3dsearch import heap
heap.keep_freed_memory()
def step():
    blocks = [torch.empty(12 << 20) for _ in range(4)]
    for block in blocks:
        block.fill_(1.0)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_reuse(keep: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, heap.ENV_VAR: keep},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(heap._libc_mallopt() is None, reason="needs glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults() -> None:
    # switched off (the control), glibc's defaults fault every page in again: 3 x 4 x 12,288
    assert _faults_of_reuse("1") < 100 < _faults_of_reuse("0")


def test_switched_off_it_reports_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.ENV_VAR, "0")
    assert not heap.keep_freed_memory()
