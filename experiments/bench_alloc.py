"""What the memory allocator costs a CPU training step: page faults with glibc's defaults and with freed memory kept.

glibc returns freed memory to the OS (large blocks are mmap-ed and unmapped, the heap's top is
trimmed), so the next step's tensors fault their pages in again and the kernel zeroes each one:
visible as minor page faults. Each variant runs in a fresh process (the allocator is set per process)
and times training steps (forward, cross-entropy, backward, SGD) of a preset at a given input,
channels-last, one thread, batch 16, best of ``--steps`` after two warm-up steps, with the minor page
faults per step. Variants: glibc's defaults, and glibc tunables that keep freed memory
(``GLIBC_TUNABLES``, the settings ``mallopt`` would make in-process). Run the script a few times:
on this box step times moved by up to 30% from one process to the next.

    .venv/bin/python experiments/bench_alloc.py                 # ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

_MB = 1 << 20
_VARIANTS = {
    "glibc defaults": {},
    "tunables: mmap 32 MB, no trim": {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={32 * _MB}:"
                                                           f"glibc.malloc.trim_threshold={2047 * _MB}"},
    "tunables: + top pad 64 MB": {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={32 * _MB}:"
                                                     f"glibc.malloc.trim_threshold={2047 * _MB}:"
                                                     f"glibc.malloc.top_pad={64 * _MB}"},
}


def _child(name: str, frames: int, side: int, steps: int) -> None:
    """Runs in the fresh process: times the steps and prints one JSON line."""
    import torch

    from x3dsearch import preset

    from bench_speed import training_step  # experiments/ is on sys.path when run as a script

    torch.set_num_threads(1)
    step = training_step(preset(name).replace(frames=frames), side, 16, channels_last=True, fast=True)
    step()
    step()
    faults, best = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    print(json.dumps({"step_ms": best * 1e3, "faults": faults}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["M:16x56", "XS:4x40", "XS:4x160"],
                        help="PRESET:FRAMESxSIDE inputs (default: M and XS at the proxy's input, XS at its crop)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, frames, side, steps = args.child
        _child(name, int(frames), int(side), int(steps))
        return
    print(f"batch 16, one thread, channels-last, best of {args.steps} steps, minor page faults per step\n")
    print("| shape | allocator | step ms | page faults / step |")
    print("|---|---|---:|---:|")
    for shape in args.shapes:
        name, size = shape.split(":")
        frames, side = size.split("x")
        for variant, env in _VARIANTS.items():
            out = subprocess.run([sys.executable, __file__, "--child", name, frames, side, str(args.steps)],
                                 env={**os.environ, **env}, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{shape} with {variant} failed:\n{out.stderr}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} {frames}×{side}² | {variant} | {row['step_ms']:.0f} | {row['faults']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
