"""The optimiser step's fixed cost at proxy sizes: PyTorch's per-parameter loop against its fused CPU kernel.

For each shape (X2D, XS and S by default) at the CPU proxy's input (its own frames, a quarter of its
crop), batch 16, one thread: a training step (forward, cross-entropy, backward, ``optimizer.step``)
with the optimiser ``train`` builds (AdamW as ``cpu_proxy`` uses it, or SGD with momentum), once with
``foreach=False`` (PyTorch's CPU default) and once with ``fused=True`` (what ``train`` uses on CPU).
All run interleaved in one process; each figure is the median of ``--steps`` steps, and
``optimizer.step()`` alone is timed right after each step.

    .venv/bin/python experiments/bench_optimizer.py              # ~1 minute on a quiet machine
    .venv/bin/python experiments/bench_optimizer.py --optimizer sgd --shapes XS
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from x3dsearch import build_model
from x3dsearch.schedule import load_schedule
from x3dsearch.train import _param_groups

from bench_speed import config_of, cpu_name  # experiments/ is on sys.path when run as a script

VARIANTS = {"loop": {"foreach": False}, "fused": {"fused": True}}


def steps_of(shape: str, optimizer: str, options: dict[str, bool]) -> tuple[Callable[[], None], Callable[[], None]]:
    """(a whole training step, the optimiser's step alone) of ``shape`` at the proxy's input size."""
    schedule = load_schedule("cpu_proxy").recipe
    config = config_of(shape)
    crop = schedule.train_crop(config)
    torch.manual_seed(0)
    model = build_model(config)
    groups = _param_groups(model, schedule.weight_decay)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=schedule.base_lr, betas=(schedule.momentum, 0.999), **options)
    else:
        opt = torch.optim.SGD(groups, lr=schedule.base_lr, momentum=schedule.momentum, **options)
    clips = torch.randn(schedule.batch_size, 3, config.frames, crop, crop)
    labels = torch.randint(0, config.num_classes, (schedule.batch_size,))

    def step() -> None:
        loss = F.cross_entropy(model(clips), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, opt.step


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["X2D", "XS", "S"])
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {(shape, name): steps_of(shape, args.optimizer, options)
            for shape in args.shapes for name, options in VARIANTS.items()}
    for step, _ in runs.values():
        step()
        step()
    whole: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    alone: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.steps):
        for key, (step, optimizer_step) in runs.items():
            whole[key].append(_seconds(step))
            alone[key].append(_seconds(optimizer_step))
    print(f"{cpu_name()}, torch {torch.__version__}, 1 thread, {args.optimizer}, batch 16 at the proxy's input, "
          f"median of {args.steps} interleaved steps\n")
    print("| shape | step ms, loop | step ms, fused | speed-up | optimizer.step ms, loop | fused |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in args.shapes:
        loop, fused = (statistics.median(whole[shape, v]) for v in VARIANTS)
        loop_alone, fused_alone = (statistics.median(alone[shape, v]) for v in VARIANTS)
        print(f"| {shape} | {1e3 * loop:.1f} | {1e3 * fused:.1f} | {loop / fused:.2f}x | {1e3 * loop_alone:.2f} | "
              f"{1e3 * fused_alone:.2f} |")


if __name__ == "__main__":
    main()
