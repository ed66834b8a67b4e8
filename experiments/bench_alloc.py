"""What the memory allocator costs a CPU training step: glibc's defaults against freed memory kept (x3dsearch.heap).

glibc returns freed memory to the OS (large blocks are mmap-ed and unmapped, the heap's top is
trimmed), so the next step's tensors fault their pages in again and the kernel zeroes each one:
visible as minor page faults. Since ``build_model`` keeps freed memory in the heap
(:func:`x3dsearch.heap.keep_freed_memory`), the variants are ``X3DSEARCH_KEEP_MEMORY=0`` (glibc's
defaults) and ``=1`` (kept, the default). The setting is per process and glibc's own thresholds move with what a
process has freed, so each variant runs in fresh processes, alternating, ``--pairs`` times; each
process times training steps (forward, cross-entropy, backward, SGD) of a preset at a given input,
standard layout as a user feeds it, one thread, batch 16, best of ``--steps`` after two warm-up
steps, with the minor page faults per step and its peak resident memory (kept memory is not
returned to the OS). Printed: the median over the pairs, and the time one fault costs (a 10.8 MB
block faulted in against reused, in one process).

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

_VARIANTS = {"glibc defaults": "0", "kept (x3dsearch.heap)": "1"}  # X3DSEARCH_KEEP_MEMORY


def _child(name: str, frames: int, side: int, steps: int) -> None:
    """Runs in the fresh process: times the steps and prints one JSON line."""
    import torch

    from x3dsearch import preset

    from bench_speed import training_step  # experiments/ is on sys.path when run as a script

    torch.set_num_threads(1)
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


def fault_cost_us(numel: int = 2_700_000, repeats: int = 50) -> float:
    """Microseconds one minor page fault costs: a block written fresh from the OS against the same block reused."""

    import torch

    from x3dsearch import heap

    mallopt = heap._libc_mallopt()
    if mallopt is None:
        raise SystemExit("this C library has no mallopt (not glibc): nothing to compare")

    def timed() -> tuple[float, int]:
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for _ in range(repeats):
            torch.empty(numel).fill_(1.0)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    torch.set_num_threads(1)
    mallopt(heap._M_MMAP_THRESHOLD, 128 * 1024)  # every block mmap-ed and returned on free
    fresh, fresh_faults = timed()
    mallopt(heap._M_MMAP_THRESHOLD, heap._MMAP_THRESHOLD)
    mallopt(heap._M_TRIM_THRESHOLD, heap._TRIM_THRESHOLD)
    timed()
    reused, reused_faults = timed()
    return (fresh - reused) / max(1, fresh_faults - reused_faults) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["M:16x56", "XS:4x40", "XS:4x160"],
                        help="PRESET:FRAMESxSIDE inputs (default: M and XS at the proxy's input, XS at its crop)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3, help="alternating process pairs per shape (default 3)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, frames, side, steps = args.child
        _child(name, int(frames), int(side), int(steps))
        return
    print(f"batch 16, one thread, standard-layout input, best of {args.steps} steps per process, "
          f"median over {args.pairs} alternating process pairs; minor page faults per step and the process's "
          "peak resident memory\n")
    print("| shape | glibc defaults: step ms (faults, peak) | kept: step ms (faults, peak) | kept / defaults |")
    print("|---|---:|---:|---:|")
    for shape in args.shapes:
        name, size = shape.split(":")
        frames, side = size.split("x")
        rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in _VARIANTS}
        for _ in range(args.pairs):
            for variant, keep in _VARIANTS.items():
                out = subprocess.run([sys.executable, __file__, "--child", name, frames, side, str(args.steps)],
                                     env={**os.environ, "X3DSEARCH_KEEP_MEMORY": keep}, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{shape} with {variant} failed:\n{out.stderr}")
                rows[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        medians = {variant: [statistics.median(r[key] for r in runs) for key in ("step_ms", "faults", "peak_mb")]
                   for variant, runs in rows.items()}
        (base_ms, *base), (kept_ms, *kept) = medians.values()
        print(f"| {name} {frames}×{side}² | {base_ms:.0f} ({base[0]:,.0f}, {base[1]:,.0f} MB) "
              f"| {kept_ms:.0f} ({kept[0]:,.0f}, {kept[1]:,.0f} MB) | {kept_ms / base_ms:.2f} |", flush=True)
    print(f"\nOne minor page fault costs {fault_cost_us():.2f} µs (10.8 MB blocks, fresh against reused)")


if __name__ == "__main__":
    main()
