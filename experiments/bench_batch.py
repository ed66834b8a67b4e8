"""Per-clip training throughput against the batch size: ``build_model(preset("M"))`` as a user calls it.

X3D-M (``--preset``) on the CPU proxy's 16x56x56 input, a standard-layout (N, C, T, H, W) batch, one forward /
cross-entropy / backward / SGD-with-momentum step, one thread by default. Every batch size runs in
the same process, interleaved (one step of each in turn, ``--steps`` rounds after a warm-up), and
each figure is the median of its steps, with the fastest and slowest beside it. ``--before`` adds the
same models with their :class:`x3dsearch.fastconv.PointwiseConv3d` layers run as plain
``nn.Conv3d`` (PyTorch picks its own kernel by batch size), and ``--paths`` both paths of
``PointwiseConv3d`` whichever this CPU takes (a matrix product, on Intel CPUs since 2026-12-06; oneDNN's
conv, a channels-last batch under 16 viewed as 16 or more samples, elsewhere), each for an A/B in one run.

    .venv/bin/python experiments/bench_batch.py --before           # ~3 minutes on a quiet machine
    .venv/bin/python experiments/bench_batch.py --batches 4 16 --steps 9
    .venv/bin/python experiments/bench_batch.py --paths --steps 9
    .venv/bin/python experiments/bench_batch.py --preset XS --frames 4 --crop 40 --batches 8 16 32 64

The last line is the proxy's XS training step: how much of it is a fixed cost per step (the per-clip
rate a large batch reaches, against the proxy's batch of 16).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from x3dsearch import build_model, preset
from x3dsearch.fastconv import PointwiseConv3d

from bench_pytorchvideo import step_of  # experiments/ is on sys.path when run as a script
from bench_speed import MatmulPointwise, OneDNNPointwise, cpu_name

OURS, BEFORE, MATMUL, ONEDNN = ("build_model", "pointwise as nn.Conv3d", "pointwise as a matrix product",
                                "pointwise as oneDNN's conv")
_PATHS = {BEFORE: nn.Conv3d, MATMUL: MatmulPointwise, ONEDNN: OneDNNPointwise}


def with_pointwise(model: nn.Module, variant: str) -> nn.Module:
    """``model`` with its pointwise convs turned into ``variant``'s class (same weights), in place."""
    for module in model.modules():
        if type(module) is PointwiseConv3d:
            module.__class__ = _PATHS.get(variant, PointwiseConv3d)
    return model


def median_seconds(steps: dict[tuple[str, int], Callable[[], None]], rounds: int) -> dict[tuple[str, int], list[float]]:
    """Seconds of each step in each of ``rounds`` interleaved rounds, after one warm-up step each."""
    for step in steps.values():
        step()
    seconds: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[key].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="M", help="the preset whose network is timed")
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per batch size (median)")
    parser.add_argument("--before", action="store_true", help="also time the pointwise convs as plain nn.Conv3d")
    parser.add_argument("--paths", action="store_true",
                        help="also time both of PointwiseConv3d's paths, whichever this CPU takes: a matrix product "
                             "(Intel) and oneDNN's conv, folded under batch 16 on one thread (elsewhere)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = preset(args.preset)
    variants = [OURS] + [BEFORE] * args.before + [MATMUL, ONEDNN] * args.paths
    steps = {}
    for variant in variants:
        for batch in args.batches:
            torch.manual_seed(0)
            model = build_model(config)
            clips = torch.randn(batch, 3, args.frames, args.crop, args.crop)
            labels = torch.randint(0, config.num_classes, (batch,))
            steps[variant, batch] = step_of(with_pointwise(model, variant), clips, labels)
    seconds = median_seconds(steps, args.steps)
    rate = {key: key[1] / statistics.median(s) for key, s in seconds.items()}
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), X3D-{args.preset}, {args.frames}x{args.crop}x"
          f"{args.crop} standard-layout input, median of {args.steps} interleaved steps\n")
    print("| variant | batch | ms per step (min-max) | clips/s | vs the variant's best |")
    print("|---|---:|---:|---:|---:|")
    for variant in variants:
        best = max(rate[variant, batch] for batch in args.batches)
        for batch in args.batches:
            s = seconds[variant, batch]
            print(f"| {variant} | {batch} | {1e3 * statistics.median(s):.0f} ({1e3 * min(s):.0f}-{1e3 * max(s):.0f}) "
                  f"| {rate[variant, batch]:.1f} | {rate[variant, batch] / best:.2f} |")
    for other in variants[1:]:
        print(f"\nours / {other}, clips/s: " + ", ".join(
            f"batch {batch} {rate[OURS, batch] / rate[other, batch]:.2f}x" for batch in args.batches))


if __name__ == "__main__":
    main()
