"""Benchmark of the data layer: decoding from files vs the decoded-clip cache, and cached clips per second.

(a) For the default synthetic benchmark (generated on first use): one train epoch decoding every
clip from its file, the first cached epoch (decode everything into the cache, then sample) and a
later cached epoch (sample only). (b) Clips per second of the cached loader alone (dataset
indexing, no DataLoader, one torch thread) at 28 and 56 px with 1, 4 and 16 frames.

    .venv/bin/python experiments/bench_data.py [--data DIR] [--epoch-videos N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from x3dsearch.config import X3DConfig
from x3dsearch.data import VideoDataset, default_dataset


def _epoch_seconds(dataset: VideoDataset, count: int) -> float:
    """Seconds to draw the first ``count`` training clips of the dataset."""
    start = time.perf_counter()
    for index in range(count):
        dataset[index]
    return time.perf_counter() - start


def _timed_open(data: Path, config: X3DConfig, **kwargs: object) -> tuple[VideoDataset, float]:
    start = time.perf_counter()
    dataset = VideoDataset(data, config, "train", **kwargs)
    return dataset, time.perf_counter() - start


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Kinetics-layout folder (default: the synthetic benchmark)")
    parser.add_argument("--epoch-videos", type=int, default=None, help="clips per epoch (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    data = args.data or default_dataset()
    print(f"dataset: {data} (ready in {time.perf_counter() - start:.1f} s)")
    config = X3DConfig(frames=16, stride=5, crop=56)
    with tempfile.TemporaryDirectory() as cache:
        files, opened = _timed_open(data, config)
        count = args.epoch_videos or len(files)
        print(f"\n(a) one train epoch of {count} clips, {config.frames}x{config.stride} at {config.crop} px")
        print(f"{'loader':<34}{'open s':>8}{'epoch s':>9}{'ms/clip':>9}")
        seconds = _epoch_seconds(files, count)
        print(f"{'files (PyAV seek + decode)':<34}{opened:>8.1f}{seconds:>9.1f}{1000 * seconds / count:>9.1f}")
        cached, built = _timed_open(data, config, cache_dir=cache, cache_side=64)
        seconds = _epoch_seconds(cached, count)
        print(f"{'cache, epoch 1 (build + sample)':<34}{built:>8.1f}{seconds:>9.1f}{1000 * seconds / count:>9.1f}")
        cached, reopened = _timed_open(data, config, cache_dir=cache, cache_side=64)
        cached.set_epoch(1)
        seconds = _epoch_seconds(cached, count)
        print(f"{'cache, epoch 2+ (reopen + sample)':<34}{reopened:>8.1f}{seconds:>9.1f}{1000 * seconds / count:>9.1f}")

        print("\n(b) cached loader alone, clips/s (stride 5, train augmentation; eval = 1 centre view)")
        print(f"{'crop':>5}{'frames':>8}{'train':>9}{'eval':>9}")
        for crop in (28, 56):
            for frames in (1, 4, 16):
                size = X3DConfig(frames=frames, stride=5, crop=crop)
                rates = []
                for split in ("train", "val"):
                    dataset = VideoDataset(data, size, split, cache_dir=cache, cache_side=64)
                    n = min(len(dataset), 200)
                    rates.append(n / _epoch_seconds(dataset, n))
                print(f"{crop:>5}{frames:>8}{rates[0]:>9.0f}{rates[1]:>9.0f}")


if __name__ == "__main__":
    main()
