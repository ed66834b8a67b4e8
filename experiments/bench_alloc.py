"""What the memory allocator costs a CPU training step: glibc's defaults against freed memory kept (x3dsearch.heap).

glibc returns freed memory to the OS (large blocks are mmap-ed and unmapped, the heap's top is
trimmed), so the next step's tensors fault their pages in again and the kernel zeroes each one:
visible as minor page faults. :func:`x3dsearch.heap.keep_freed_memory` (which ``train`` calls on CPU)
keeps freed blocks in the heap instead. Each process here calls it and ``X3DSEARCH_KEEP_MEMORY``
decides: ``0`` for glibc's defaults, ``1`` for kept. The setting is per process and glibc's own
thresholds move with what a process has freed, so each variant runs in fresh processes, alternating,
``--pairs`` times, each going first in every other pair. Each process times training steps (forward, cross-entropy, backward, SGD) of a
preset at a given input, standard layout as a user feeds it, one thread, batch 16, best of
``--steps`` after two warm-up steps, with the minor page faults per step and its peak resident
memory (kept memory is not returned to the OS). Printed: the median over the pairs of each column,
the ratio of each pair, and the time one fault costs (a 10.8 MB block mmap-ed afresh against kept,
in two more processes).

    .venv/bin/python experiments/bench_alloc.py                 # ~6 minutes
    .venv/bin/python experiments/bench_alloc.py --shapes M:16x56 --pairs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

_ENV = "X3DSEARCH_KEEP_MEMORY"  # x3dsearch.heap.ENV_VAR, not imported here: the parent process stays light
_VARIANTS = {"glibc defaults": "0", "kept (x3dsearch.heap)": "1"}  # its value per variant


def _child(name: str, frames: int, side: int, steps: int) -> None:
    """Runs in the fresh process: times the steps and prints one JSON line."""
    import torch

    from x3dsearch import heap, preset

    from bench_speed import training_step  # experiments/ is on sys.path when run as a script

    torch.set_num_threads(1)
    heap.keep_freed_memory()  # a no-op when the environment switches it off
    step = training_step(preset(name).replace(frames=frames), side, 16, channels_last=False, fast=True)
    step()
    step()
    faults, best = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"step_ms": best * 1e3, "faults": faults, "peak_mb": peak_mb}))


def _fault_child() -> None:
    """Runs in a fresh process: allocates, writes and frees a 10.8 MB block ``repeats`` times after a few
    warm-ups; prints one JSON line of milliseconds and minor page faults per repeat."""
    import torch

    from x3dsearch import heap

    repeats, numel = 50, 2_700_000
    torch.set_num_threads(1)
    heap.keep_freed_memory()  # a no-op when the environment switches it off
    for _ in range(5):
        torch.empty(numel).fill_(1.0)
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(repeats):
        torch.empty(numel).fill_(1.0)
    elapsed, faults = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"ms": elapsed / repeats * 1e3, "faults": faults / repeats}))


def _fault_cost_us() -> float:
    """Microseconds one minor page fault costs: a block mmap-ed afresh each time (a fixed 128 KB threshold)
    against the same block kept in the heap, each in its own process."""
    runs = {}
    for variant, env in {"fresh": {_ENV: "0", "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
                         "kept": {_ENV: "1"}}.items():
        out = subprocess.run([sys.executable, __file__, "--fault-child"], env={**os.environ, **env},
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the fault-cost child ({variant}) failed:\n{out.stderr}")
        runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    faults = runs["fresh"]["faults"] - runs["kept"]["faults"]
    if faults < 1000:  # a 10.8 MB block is 2,637 pages
        raise SystemExit(f"the fresh blocks did not fault as expected ({runs}): is this glibc?")
    return (runs["fresh"]["ms"] - runs["kept"]["ms"]) / faults * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["M:16x56", "XS:4x40", "XS:4x160"],
                        help="PRESET:FRAMESxSIDE inputs (default: M and XS at the proxy's input, XS at its crop)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3, help="alternating process pairs per shape (default 3)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--fault-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, frames, side, steps = args.child
        _child(name, int(frames), int(side), int(steps))
        return
    if args.fault_child:
        _fault_child()
        return
    print(f"batch 16, one thread, standard-layout input, best of {args.steps} steps per process, "
          f"median over {args.pairs} alternating process pairs; minor page faults per step and the process's "
          "peak resident memory\n")
    print("| shape | glibc defaults: step ms (faults, peak) | kept: step ms (faults, peak) "
          "| kept / defaults: median (each pair) |")
    print("|---|---:|---:|---|")
    for shape in args.shapes:
        name, size = shape.split(":")
        frames, side = size.split("x")
        rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in _VARIANTS}
        for pair in range(args.pairs):  # each variant goes first in every other pair
            for variant, keep in _VARIANTS.items() if pair % 2 == 0 else reversed(_VARIANTS.items()):
                out = subprocess.run([sys.executable, __file__, "--child", name, frames, side, str(args.steps)],
                                     env={**os.environ, _ENV: keep}, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{shape} with {variant} failed:\n{out.stderr}")
                rows[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        cells = []
        for runs in rows.values():
            ms, faults, peak = (statistics.median(r[key] for r in runs) for key in ("step_ms", "faults", "peak_mb"))
            cells.append(f"{ms:.0f} ({faults:,.0f}, {peak:,.0f} MB)")
        base, kept = rows.values()
        ratios = [k["step_ms"] / b["step_ms"] for b, k in zip(base, kept)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"| {name} {frames}×{side}² | {' | '.join(cells)} | {statistics.median(ratios):.2f} ({each}) |",
              flush=True)
    print(f"\nOne minor page fault costs {_fault_cost_us():.1f} µs (10.8 MB blocks, fresh against kept, one pair)")


if __name__ == "__main__":
    main()
