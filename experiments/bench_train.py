"""Training throughput at the CPU proxy's input size, and the overhead of ``train`` over a bare loop.

For each shape (X2D, XS, M by default) at ``round(crop * spatial_scale)`` px and its own frames,
on one thread: clips/s of a bare forward/backward/SGD-step loop on one in-memory batch, in the
default and in the channels-last-3d memory layout; clips/s of :func:`x3dsearch.train.train` on
in-memory clips of the same size (its own ``clips_per_s``: the training phase only, data loading
and collation included); FLOPs of one clip at that size (``count_flops(config, crop=...)``) and
the achieved GFLOP/s, counting a training step as 3x the forward FLOPs (forward + backward for
activations and weights). ``proxy s`` is the predicted wall time of one proxy training with the
schedule (its epochs x train_videos training clips at the ``train`` rate plus val_videos x views
forward passes at 3x that rate), without video decoding and trial start-up. ``data`` is
``train``'s clips/s on the synthetic benchmark through the cached clip loader (decoded clips,
augmentation, collation in the training process), ``data/mem`` its ratio to in-memory clips.

    .venv/bin/python experiments/bench_train.py                  # X2D, XS, M with cpu_proxy
    .venv/bin/python experiments/bench_train.py --shapes XS --steps 30 --schedule cpu_full
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils.data import Dataset

from x3dsearch.config import X3DConfig, preset
from x3dsearch.cost import count_flops
from x3dsearch.data import default_dataset
from x3dsearch import fastconv
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule
from x3dsearch.train import train

from bench_speed import training_step  # experiments/ is on sys.path when run as a script


class _Clips(Dataset):
    """``n`` random clips of one shape with labels, held in memory."""

    def __init__(self, n: int, shape: tuple[int, ...], classes: int, views: int | None = None) -> None:
        self.clips = torch.randn(n, *shape)
        self.labels = torch.randint(0, classes, (n,))
        self.views = views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[i]
        return (clip if self.views is None else clip.expand(self.views, *clip.shape)), int(self.labels[i])


def bare_loop(config: X3DConfig, crop: int, batch: int, steps: int, channels_last: bool) -> float:
    """Clips/s of forward/backward/step on one fixed batch (after 3 warm-up steps)."""
    step = training_step(config, crop, batch, channels_last, fast=fastconv.enabled())
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def train_loop(config: X3DConfig, crop: int, schedule: Recipe, steps: int) -> float:
    """Clips/s of ``train`` (training phase) over ``steps`` batches of in-memory clips."""
    shape = (3, config.frames, crop, crop)
    data = (_Clips(steps * schedule.batch_size, shape, config.num_classes), _Clips(2, shape, config.num_classes))
    bench = schedule.replace(epochs=1, warmup_epochs=0, spatial_scale=1.0, time_budget_s=None, num_workers=0,
                             optimizer="sgd", precise_bn_clips=0)  # the bare loop's optimiser: overhead only
    result = train(config.replace(crop=crop), data, bench, seed=0, threads=1)
    assert result.status == "ok", result.reason
    return result.clips_per_s


def data_loop(config: X3DConfig, schedule: Recipe, steps: int) -> float:
    """Clips/s of ``train`` (training phase) on the default benchmark through the cached clip loader."""
    bench = schedule.replace(epochs=1, warmup_epochs=0, time_budget_s=None, num_workers=0,
                             train_videos=steps * schedule.batch_size, val_videos=12, precise_bn_clips=0,
                             optimizer="sgd")  # as train_loop: the ratio isolates the loader
    result = train(config.replace(num_classes=12), str(default_dataset()), bench, seed=0, threads=1)
    assert result.status == "ok", result.reason
    return result.clips_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["X2D", "XS", "M"])
    parser.add_argument("--schedule", default="cpu_proxy")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--train-clips", type=int, default=384,
                        help="training clips per epoch for the predicted proxy time (default: the benchmark's 384)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    schedule = load_schedule(args.schedule).recipe
    views = math.prod(schedule.scored_views())
    print(f"schedule {schedule.name}: scale {schedule.spatial_scale:g}, batch {schedule.batch_size}, "
          f"1 thread, torch {torch.__version__}; GFLOP/s counts a training clip as 3x forward FLOPs")
    header = (f"{'shape':<6}{'input':>12}{'GFLOPs':>9}{'bare':>9}{'bare CL':>9}{'train':>9}"
              f"{'GFLOP/s':>9}{'overhead':>10}{'data':>9}{'data/mem':>9}{'proxy s':>9}")
    print(header + "\n" + "-" * len(header))
    for name in args.shapes:
        config = preset(name, num_classes=args.classes)
        crop = schedule.train_crop(config)
        flops = count_flops(config, crop=crop)
        default = bare_loop(config, crop, schedule.batch_size, args.steps, channels_last=False)
        channels_last = bare_loop(config, crop, schedule.batch_size, args.steps, channels_last=True)
        looped = train_loop(config, crop, schedule, args.steps)
        loaded = data_loop(config, schedule, args.steps)
        bare = channels_last if schedule.channels_last else default
        train_clips = schedule.epochs * (schedule.train_videos or args.train_clips)
        proxy = train_clips / looped + (schedule.val_videos or 0) * views / (3 * looped)
        print(f"{name:<6}{f'{config.frames}x{crop}x{crop}':>12}{flops / 1e9:>9.4f}{default:>9.1f}"
              f"{channels_last:>9.1f}{looped:>9.1f}{3 * flops * looped / 1e9:>9.2f}"
              f"{bare / looped - 1:>10.1%}{loaded:>9.1f}{loaded / looped:>9.0%}{proxy:>9.1f}")
    print("clips/s columns: bare (default layout), bare CL (channels_last_3d), train (x3dsearch.train, "
          f"{'channels-last' if schedule.channels_last else 'default layout'}) on in-memory clips; "
          "overhead = bare/train - 1; data = train on the synthetic benchmark through the cached loader")


if __name__ == "__main__":
    main()
