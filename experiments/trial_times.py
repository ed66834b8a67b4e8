"""Proxy-training time of the same configs in two runs (e.g. with and without the fast channelwise conv).

Two searches rarely follow the same path, so their wall times mix speed with path; the configs
both trained, at the same proxy schedule, compare speed alone.

    .venv/bin/python experiments/trial_times.py runs/demo-reference runs/demo
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from x3dsearch import load_run


def _by_shape(run: str) -> pd.DataFrame:
    """Finished ok trials keyed by their architecture (the config without its class count)."""
    journal = load_run(run)
    ok = journal[journal["status"] == "ok"].copy()
    ok["shape"] = [json.dumps({k: v for k, v in c.items() if k != "num_classes"}, sort_keys=True)
                   for c in ok["config"]]
    return ok.drop_duplicates("shape").set_index("shape")[["gflops", "seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args()
    both = _by_shape(args.before).join(_by_shape(args.after), lsuffix="_before", rsuffix="_after", how="inner")
    both["speed-up"] = both["seconds_before"] / both["seconds_after"]
    print(both[["gflops_before", "seconds_before", "seconds_after", "speed-up"]]
          .sort_values("gflops_before").to_string(index=False, float_format="%.2f"))
    big = both[both["gflops_before"] >= 0.5]
    print(f"\n{len(both)} configs in both runs; speed-up median {both['speed-up'].median():.2f}x, "
          f"at >= 0.5 GFLOPs {big['speed-up'].median():.2f}x ({len(big)} configs); summed trial time "
          f"{both['seconds_before'].sum():.0f} s -> {both['seconds_after'].sum():.0f} s")


if __name__ == "__main__":
    main()
