"""One proxy training read from the clip cache the data layer picks against one at the videos' own size.

For crops over 64 px the data layer caches the 64-px benchmark at 128 px (the smallest of 64/128/256/512 at least
the crop), so every clip is an upsampled copy. This trains one late-path proxy candidate (one epoch of the default
proxy recipe, one thread, as a search trial runs) from each cache in turn and prints seconds and val top-1.
Both caches must already exist (a search that reached 320 px builds the 128-px one). Run alone:

    .venv/bin/python experiments/bench_cache_side.py --repeats 2
"""

from __future__ import annotations

import argparse
import time

from x3dsearch import preset
from x3dsearch.data import VideoDataset, default_dataset
from x3dsearch.schedule import DEFAULT_PROXY, load_schedule
from x3dsearch.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="interleaved trainings per cache")
    args = parser.parse_args()
    data = default_dataset()
    recipe = load_schedule(DEFAULT_PROXY).recipe.replace(epochs=1)
    config = preset("X2D", frames=8, stride=7, crop=320, width=2.0, bottleneck=2.25, depth=2.2, num_classes=12)
    crop = config.replace(crop=recipe.train_crop(config))
    print(f"{config.short} at {crop.crop} px, {recipe.name} one epoch, one thread; data {data}")
    for repeat in range(args.repeats):
        for side in (None, 64) if repeat % 2 == 0 else (64, None):  # alternate the order: no side always goes first
            sets = tuple(VideoDataset(data, crop, split=split, cache_dir=True, cache_side=side, seed=0,
                                      views=recipe.eval_views) for split in ("train", "val"))  # train ignores views
            start = time.perf_counter()
            result = train(config, sets, recipe, seed=0, threads=1)
            print(f"repeat {repeat} cache {side or 'default (128)'} px: {time.perf_counter() - start:6.1f} s, "
                  f"val top-1 {result.top1:.3f}", flush=True)


if __name__ == "__main__":
    main()
