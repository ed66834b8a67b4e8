"""Does a lone proxy trial finish sooner on two threads? (it would; the dispatcher does not do it: docs/search.md, "Dispatch")

Trains one proxy trial (``cpu_proxy``, 1 epoch, on the default benchmark) of each named shape on 1,
then 2 threads, twice, alternating, and prints the wall time and training clips/s of each.

    .venv/bin/python experiments/lone_trial_threads.py 5.4G XS      # ~5 minutes, run it alone
"""

from __future__ import annotations

import argparse
import time

from x3dsearch import X3DConfig, preset
from x3dsearch.data.synthetic import default_dataset
from x3dsearch.schedule import load_schedule
from x3dsearch.train import train

SHAPES = {"XS": preset("XS", num_classes=12),
          "5.4G": X3DConfig(frames=16, stride=2, crop=112, width=2.0, bottleneck=5.0625, depth=4.84, num_classes=12)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="+", choices=sorted(SHAPES))
    args = parser.parse_args()
    schedule = load_schedule("cpu_proxy").recipe.replace(epochs=1)
    for name in args.shapes:
        for threads in (1, 2, 1, 2):
            started = time.time()
            result = train(SHAPES[name], default_dataset(), schedule, seed=0, threads=threads)
            print(f"{name}: {threads} thread(s): {time.time() - started:.1f} s wall, "
                  f"training {result.clips_per_s:.1f} clips/s", flush=True)


if __name__ == "__main__":
    main()
