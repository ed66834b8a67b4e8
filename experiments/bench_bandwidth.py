"""How close the fused BatchNorm kernels run to this machine's memory bandwidth, one thread.

Each kernel of :mod:`x3dsearch.fastnorm` (``stats``, ``apply``, ``grad_sums``, ``grad_input``, with ReLU) is timed
on one channels-last float32 activation next to two plain memory-bound ops on the same tensor: a read
(``x.sum()``) and a read plus a write (``x.clone()``). A kernel's GB/s counts the tensors it must read and write
once (``stats``: x; ``apply``: x, y; ``grad_sums``: dy, x, y; ``grad_input``: dy, x, y, dx), so a kernel at the
read's or the copy's GB/s has no memory pass left to save: a faster step must then run fewer passes (more
fusion), not faster ones. Shapes are those of X3D's stages at a proxy's input size (batch 16). The median of
``--repeats`` calls after one warm-up.

    .venv/bin/python experiments/bench_bandwidth.py
    .venv/bin/python experiments/bench_bandwidth.py --shapes 96x16x20 24x16x40 --repeats 11
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from x3dsearch import fastconv, fastnorm
from x3dsearch.heap import keep_freed_memory
from x3dsearch.latency import device_name

_RELU = 1  # the kernels' activation code for ReLU (x3dsearch/csrc/batchnorm_act.cpp)


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(channels: int, frames: int, side: int, repeats: int, batch: int = 16) -> list[tuple[str, float, float]]:
    """(name, ms, GB/s) of the plain ops and the fused kernels on one (batch, channels, frames, side, side) tensor."""
    ops = fastnorm._ops()
    x = torch.randn(batch, channels, frames, side, side).contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn_like(x)
    mean, var, _ = ops.stats(x)
    scale, bias = torch.rand(channels) + 0.5, torch.randn(channels)
    y = ops.apply(x, mean, scale, bias, _RELU, None, None)
    sum_g, sum_gx, _ = ops.grad_sums(grad, x, y, mean, scale, bias, _RELU, None)
    kx, k0 = -scale * sum_gx.sum(0) / x[:, 0].numel(), torch.zeros(batch, channels)
    calls: list[tuple[str, int, Callable[[], object]]] = [
        ("read: x.sum()", 1, lambda: x.sum()),
        ("copy: x.clone()", 2, lambda: x.clone()),
        ("stats", 1, lambda: ops.stats(x)),
        ("apply (ReLU)", 2, lambda: ops.apply(x, mean, scale, bias, _RELU, None, None)),
        ("grad_sums (ReLU)", 3, lambda: ops.grad_sums(grad, x, y, mean, scale, bias, _RELU, None)),
        ("grad_input (ReLU)", 4, lambda: ops.grad_input(grad, x, y, mean, scale, bias, _RELU, None, kx, k0, False)),
    ]
    gigabytes = x.numel() * x.element_size() / 1e9
    rows = []
    for name, passes, call in calls:
        seconds = _median_seconds(call, repeats)
        rows.append((name, seconds * 1e3, passes * gigabytes / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["96x16x20", "24x16x40", "192x16x10", "48x16x40"],
                        metavar="CxTxS", help="channels x frames x side of the activation (batch 16)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(1)
    if fastconv._kernels() is None:
        raise SystemExit("the fused kernels did not build on this machine")
    print(f"{device_name()}, torch {torch.__version__}, one thread, median of "
          f"{args.repeats}\n")
    print("| activation (batch 16) | op | ms | GB/s |\n|---|---|---:|---:|")
    for shape in args.shapes:
        channels, frames, side = (int(v) for v in shape.split("x"))
        for name, ms, rate in measure(channels, frames, side, args.repeats):
            print(f"| {channels}×{frames}×{side}² | {name} | {ms:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
