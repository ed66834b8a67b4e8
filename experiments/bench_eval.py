"""Evaluation speed on CPU: the proxy's and the final training's test pass, before and after folding BatchNorm.

For the shapes a search evaluates (XS and a 6-GFLOP model at the proxy's quarter crop), at the
schedule's views: clips/s of the test forward pass as it was (``torch.no_grad``, BatchNorm as
modules, batches of ``batch_size // views`` videos) and as :func:`x3dsearch.evaluate.evaluate_views`
runs it now (``torch.inference_mode``, :func:`x3dsearch.model.fold_batchnorm`, twice the batch:
the three changes together, not one by one), in one process one after the other, best of
``--repeats``. With the training step's clips/s (as in
``bench_speed.py``) it gives the evaluation's share of a trial: ``epochs`` x 384 training clips,
192 precise-BN clips (a forward pass each, counted at the old test rate) and 360 x views test clips.

    .venv/bin/python experiments/bench_eval.py                   # ~1-2 minutes, 1 thread
    .venv/bin/python experiments/bench_eval.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from bench_speed import training_step  # experiments/ is the script's folder

from x3dsearch import X3DConfig, preset
from x3dsearch.model import build_model, fold_batchnorm

# name: (config, frames x side at the proxy's quarter crop, views, training epochs of the trial)
SHAPES = {
    "XS proxy trial (2 epochs, 1 view)": (preset("XS", num_classes=12), 40, 1, 2),
    "5.4-GFLOP proxy trial (1 epoch, 1 view)": (
        X3DConfig(frames=16, stride=2, crop=112, width=2.0, bottleneck=5.0625, depth=4.84, num_classes=12), 28, 1, 1),
    "6.1-GFLOP final training (8 epochs, 3x3 views)": (
        X3DConfig(frames=18, stride=2, crop=112, width=2.0, bottleneck=5.0625, depth=4.84, num_classes=12), 28, 9, 8),
}
BATCH = 16


def _best_rate(run: Callable[[], int], repeats: int) -> float:
    run()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        clips = run()
        rates.append(clips / (time.perf_counter() - start))
    return max(rates)


def _evaluation(model: torch.nn.Module, clips: torch.Tensor, batch: int, mode: Callable[[], object]) -> Callable[[], int]:
    def run() -> int:
        with mode():
            for i in range(0, len(clips), batch):
                model(clips[i:i + batch])
        return len(clips)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), batch {BATCH}, best of {args.repeats}\n")
    print("| shape | test clips/s before | after | speed-up | training clips/s | evaluation share of the trial, before | after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (config, side, views, epochs) in SHAPES.items():
        torch.manual_seed(0)
        model = build_model(config).eval()
        old_batch, new_batch = max(1, BATCH // views) * views, max(1, 2 * BATCH // views) * views
        clips = torch.randn(3 * new_batch, 3, config.frames, side, side)  # whole batches either way
        before = _best_rate(_evaluation(model, clips, old_batch, torch.no_grad), args.repeats)
        after = _best_rate(_evaluation(fold_batchnorm(model), clips, new_batch, torch.inference_mode), args.repeats)
        step = training_step(config, side, BATCH, channels_last=True, fast=True)
        train_rate = _best_rate(lambda: (step(), BATCH)[1], args.repeats)
        train_s = epochs * 384 / train_rate + 192 / before  # precise BN: forward passes in training mode
        shares = [360 * views / rate / (train_s + 360 * views / rate) for rate in (before, after)]
        print(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x | {train_rate:.1f} | "
              f"{shares[0]:.0%} | {shares[1]:.0%} |")


if __name__ == "__main__":
    main()
