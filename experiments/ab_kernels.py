"""The compiled kernels of another git revision against this checkout's, in one process, call by call.

Step times on this box drift by 10-30% between processes, too much to see a 5% change in a kernel.
This builds the C++ sources of ``--base`` (``git show REV:x3dsearch/csrc/...``) under renamed op
namespaces next to this checkout's, so both load into one process, then times each kernel on X3D-M's
shapes at 16x56 px (batch 16, one thread): the channelwise conv's forward, input gradient and weight
gradient on each stage's inner tensor and on res2's stride-2 first one, and the fused BatchNorm's
passes on res2's (and the backward's sums on the wider stages'), the two versions alternating call by
call (each first in every other round).
Printed per kernel: the median of ``--rounds`` calls each, and this checkout's over the base's. Freed
memory is kept (``x3dsearch.heap``) so page faults do not add to either side. Two identical versions
(``--base HEAD``) gave 0.92-1.11 over the 22 kernels it had then (median 0.99): changes smaller than that
do not show.

    .venv/bin/python experiments/ab_kernels.py --base HEAD~1           # ~2 minutes, plus the base's build
    .venv/bin/python experiments/ab_kernels.py --base 3702c5b --only "cw fwd" --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils import cpp_extension

from x3dsearch import fastconv, heap

_NAMESPACES = ("x3dsearch_channelwise3d", "x3dsearch_batchnorm_act")
# (channels, side, stride) of X3D-M's channelwise convs at 16x56 px: each stage's inner tensor, res2's first
_CONVS = [(54, 14, 1), (54, 28, 2), (108, 7, 1), (216, 4, 1), (432, 2, 1)]
# (channels, side) of X3D-M's wider BatchNorms at 16x56 px, beside res2's 54 channels at 14 px
_WIDE_NORMS = [(108, 7), (216, 4), (432, 2)]


def _base_ops(revision: str, build_dir: Path) -> tuple[Any, Any]:
    """The base revision's (channelwise, batchnorm) op namespaces, built under the names ``base_*``."""
    repo = Path(__file__).resolve().parents[1]
    sources = []
    for path in ["x3dsearch/csrc/lanes.h", *(f"x3dsearch/csrc/{s.name}" for s in fastconv._SOURCES)]:
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=repo, capture_output=True, text=True)
        if shown.returncode != 0:
            raise SystemExit(f"cannot read {path} at {revision}: {shown.stderr.strip()}")
        text = shown.stdout
        for name in _NAMESPACES:
            text = text.replace(f"TORCH_LIBRARY({name},", f"TORCH_LIBRARY(base_{name},")
        (build_dir / Path(path).name).write_text(text)
        sources += [str(build_dir / Path(path).name)] if path.endswith(".cpp") else []
    cpp_extension.load(name="ab_kernels_base", sources=sources, build_directory=str(build_dir),
                       extra_cflags=fastconv._CFLAGS, extra_ldflags=["-fopenmp"], is_python_module=False)
    return tuple(getattr(torch.ops, f"base_{name}") for name in _NAMESPACES)


def _cases(conv: Any, norm: Any) -> dict[str, Callable[[], object]]:
    """One call of each kernel on fixed random inputs, by name."""
    torch.manual_seed(0)
    last = torch.channels_last_3d
    cases: dict[str, Callable[[], object]] = {}
    for channels, side, stride in _CONVS:
        x = torch.randn(16, channels, 16, side, side).contiguous(memory_format=last)
        w = torch.randn(channels, 1, 3, 3, 3)
        out = (side - 1) // stride + 1  # 3x3 taps, padding 1
        dy = torch.randn(16, channels, 16, out, out).contiguous(memory_format=last)
        tag = f"{channels}x{side}/{stride}"
        cases[f"cw fwd {tag}"] = lambda x=x, w=w, s=stride: conv.forward(x, w, s, [1, 1, 1])
        cases[f"cw bin {tag}"] = lambda dy=dy, w=w, x=x, s=stride: conv.backward_input(dy, w, list(x.shape), s,
                                                                                       [1, 1, 1])
        cases[f"cw bw {tag}"] = lambda dy=dy, x=x, s=stride: conv.backward_weight(dy, x, [3, 3, 3], s, [1, 1, 1])
    c = 54
    x, dy, res = (torch.randn(16, c, 16, 14, 14).contiguous(memory_format=last) for _ in range(3))
    y, mean, scale, bias = torch.relu(x), torch.zeros(c), torch.ones(c), torch.zeros(c)
    gate, kx, k0 = torch.rand(16, c), torch.zeros(c), torch.zeros(16, c)
    cases.update({
        "bn stats": lambda: norm.stats(x),
        "bn apply silu+gate": lambda: norm.apply(x, mean, scale, bias, 2, gate, None),
        "bn apply relu+residual": lambda: norm.apply(x, mean, scale, bias, 1, None, res),
        "bn grad_sums silu+gate": lambda: norm.grad_sums(dy, x, None, mean, scale, bias, 2, gate),
        "bn grad_sums relu": lambda: norm.grad_sums(dy, x, y, mean, scale, bias, 1, None),
        "bn grad_input silu+gate": lambda: norm.grad_input(dy, x, None, mean, scale, bias, 2, gate, kx, k0, False),
        "bn grad_input relu+residual": lambda: norm.grad_input(dy, x, y, mean, scale, bias, 1, None, kx, k0, True),
    })
    for width, side in _WIDE_NORMS:  # the backward's sums where a block of rows of two or three tensors outgrows L1
        wx, wdy = (torch.randn(16, width, 16, side, side).contiguous(memory_format=last) for _ in range(2))
        per_channel = (torch.zeros(width), torch.ones(width), torch.zeros(width))  # mean, scale, bias
        cases[f"bn grad_sums relu {width}x{side}"] = lambda x=wx, dy=wdy, y=torch.relu(wx), p=per_channel: (
            norm.grad_sums(dy, x, y, *p, 1, None))
        cases[f"bn grad_sums silu+gate {width}x{side}"] = lambda x=wx, dy=wdy, p=per_channel, g=torch.rand(16, width): (
            norm.grad_sums(dy, x, None, *p, 2, g))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against, e.g. HEAD~1")
    parser.add_argument("--only", default="", help="only kernels whose name contains this (e.g. 'cw fwd')")
    parser.add_argument("--rounds", type=int, default=9, help="calls per kernel and version (default 9)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    heap.keep_freed_memory()
    if not fastconv.available():
        raise SystemExit("this checkout's kernels did not build")
    with tempfile.TemporaryDirectory() as build_dir:
        base = _cases(*_base_ops(args.base, Path(build_dir)))
        ours = _cases(*(getattr(torch.ops, name) for name in _NAMESPACES))
        print(f"one thread; median of {args.rounds} alternating calls each; this checkout against {args.base}\n")
        print("| kernel | base ms | this checkout ms | this / base |")
        print("|---|---:|---:|---:|")
        for name in (n for n in base if args.only in n):
            times: tuple[list[float], list[float]] = ([], [])
            base[name]()
            ours[name]()
            for i in range(args.rounds):
                order = ((base[name], times[0]), (ours[name], times[1]))
                for call, kept in order if i % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    call()
                    kept.append(time.perf_counter() - start)
            a, b = statistics.median(times[0]), statistics.median(times[1])
            print(f"| {name} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
