"""Time the closed-form cost model against fvcore tracing on X3D presets.

Usage: .venv/bin/python experiments/bench_cost.py [--preset M] [--repeats 1000]
"""

from __future__ import annotations

import argparse
import time

import torch
from fvcore.nn import FlopCountAnalysis

from x3dsearch import build_model, count_flops, preset


def _fvcore_count(name: str) -> tuple[int, float]:
    config = preset(name)
    model = build_model(config).eval()
    clip = torch.zeros(1, 3, config.frames, config.crop, config.crop)
    t0 = time.perf_counter()
    analysis = FlopCountAnalysis(model, clip)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    flops = by_op.get("conv", 0) + by_op.get("linear", 0)
    return flops, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="M")
    parser.add_argument("--repeats", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = preset(args.preset)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        closed = count_flops(config)
    closed_s = (time.perf_counter() - t0) / args.repeats
    traced, traced_s = _fvcore_count(args.preset)
    print(f"X3D-{args.preset}: count_flops {closed:,} in {closed_s * 1e3:.3f} ms; "
          f"fvcore conv+linear {traced:,} in {traced_s:.2f} s; equal: {closed == traced}; "
          f"speed-up {traced_s / closed_s:,.0f}x")


if __name__ == "__main__":
    main()
