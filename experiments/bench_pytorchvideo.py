"""A user's training step with our model against pytorchvideo's ``create_x3d``, same shape, one process.

Both models are built as a user would build them and fed the same standard-layout (N, C, T, H, W)
float batch: ``build_model(preset("M"))`` (fast kernels on, the default) and
``pytorchvideo.models.x3d.create_x3d`` with X3D-M's factors; also ours with ``fast=False`` (PyTorch's
layers, default layout) for reference. One training step is forward, cross-entropy, backward and an
SGD step with momentum; the variants run interleaved and each figure is the best (or with ``--median`` the median) of ``--repeats``
(bench_speed's timing). Default shape: X3D-M at the CPU proxy's input, 16 frames of 56 px, batch 16,
12 classes, one thread.

pytorchvideo is not a dependency of x3dsearch. Install it next to it without its dependencies
(``.venv/bin/pip install --no-deps pytorchvideo==0.1.5``); its ``create_x3d`` needs nothing from
torchvision but ``pytorchvideo.models.head`` imports ``torchvision.ops.RoIAlign``, so when torchvision
is missing (the registry here only has CUDA builds) this script stands in an empty module for it.

    .venv/bin/python experiments/bench_pytorchvideo.py                # ~2 minutes
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from x3dsearch import build_model, count_flops, preset

from bench_speed import interleaved_times, cpu_name  # experiments/ is on sys.path when run as a script


def _create_x3d() -> Callable[..., nn.Module]:
    """pytorchvideo's ``create_x3d``, with a stand-in torchvision if there is none; exits if pytorchvideo is missing."""
    if importlib.util.find_spec("pytorchvideo") is None:
        raise SystemExit("pytorchvideo is not installed: .venv/bin/pip install --no-deps pytorchvideo==0.1.5")
    if importlib.util.find_spec("torchvision") is None:
        ops = types.ModuleType("torchvision.ops")
        ops.RoIAlign = None  # imported by pytorchvideo.models.head, never used by create_x3d
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision"].ops = ops
        sys.modules["torchvision.ops"] = ops
    from pytorchvideo.models.x3d import create_x3d
    return create_x3d


def step_of(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One forward/backward/SGD step of ``model`` on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--median", action="store_true", help="report the median of the repeats, not the best")
    args = parser.parse_args()
    create_x3d = _create_x3d()
    torch.set_num_threads(args.threads)
    config = preset("M", frames=args.frames, crop=args.crop, num_classes=args.classes)
    torch.manual_seed(0)
    clips = torch.randn(args.batch, 3, args.frames, args.crop, args.crop)
    labels = torch.randint(0, args.classes, (args.batch,))
    models = {
        "x3dsearch build_model (default)": build_model(config),
        "x3dsearch build_model(fast=False)": build_model(config, fast=False),
        "pytorchvideo create_x3d": create_x3d(input_clip_length=args.frames, input_crop_size=args.crop,
                                              model_num_class=args.classes, width_factor=config.width,
                                              depth_factor=config.depth, bottleneck_factor=config.bottleneck),
    }
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    seconds = interleaved_times({name: step_of(m, clips, labels) for name, m in models.items()}, args.repeats,
                                statistic=statistics.median if args.median else min)
    macs = count_flops(config, crop=args.crop)
    base = seconds["pytorchvideo create_x3d"]
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} of "
          f"{args.frames}x{args.crop}x{args.crop}, {'median' if args.median else 'best'} of {args.repeats}, standard-layout input\n")
    print("| model | params | clips/s | GMAC/s | vs pytorchvideo |")
    print("|---|---:|---:|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {params[name]:,} | {args.batch / s:.1f} | {3 * macs * args.batch / s / 1e9:.1f} | "
              f"{base / s:.2f}x |")


if __name__ == "__main__":
    main()
