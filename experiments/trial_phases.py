"""Where one proxy trial of a search spends its time: inheriting, opening the data, the training epochs, precise
BN, evaluation and saving.

The trial is re-run in this process from the run's journal: the same config, parent weights (from the run's
``weights/`` folder), seed, epochs and proxy schedule, on the data the run searched (``--data``, default the
synthetic benchmark). Its val top-1 is printed beside the journal's, so a re-run that did not reproduce the trial
shows it. Each phase is timed by wrapping the function of :mod:`x3dsearch.train` that runs it.

    .venv/bin/python experiments/trial_phases.py runs/demo --step 11 --axis bottleneck
    .venv/bin/python experiments/trial_phases.py runs/demo --step 2 --axis temporal --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import x3dsearch.train as train_module
from x3dsearch import load_run
from x3dsearch.config import X3DConfig
from x3dsearch.data import default_dataset
from x3dsearch.proxy import initial_state
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.rundir import RunDir

# phase name -> (owner, attribute) of the function that runs it
PHASES = {"open data": (train_module, "_open_datasets"), "build model": (train_module._Parts, "build"),
          "train epochs": (train_module._Epochs, "run"), "checkpoint": (train_module._Checkpoints, "save"),
          "precise BN": (train_module, "precise_bn"), "evaluate": (train_module, "score_views"),
          "save weights": (train_module, "_save_outputs")}


def _timed(function: Callable[..., Any], name: str, seconds: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.monotonic() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a search's run directory (its journal and weights/)")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--axis", required=True, help="the candidate's axis label in the journal, e.g. bottleneck")
    parser.add_argument("--threads", type=int, default=1, help="as the run's trials (1 by default)")
    parser.add_argument("--data", type=Path, help="the run's data folder (default: the synthetic benchmark)")
    args = parser.parse_args()
    journal = load_run(args.run)
    rows = journal[(journal["step"] == args.step) & (journal["axis"] == args.axis) & (journal["status"] == "ok")]
    if rows.empty:
        raise SystemExit(f"no finished trial of {args.axis} at step {args.step} in {args.run}")
    row = rows.iloc[-1]
    config = X3DConfig.from_dict(row["config"])
    parent = X3DConfig.from_dict(json.loads(row["parent_key"])) if isinstance(row["parent_key"], str) else None
    seed = int(row["metrics"]["seed"])
    recipe = ProxyPolicy.from_dict(RunDir(args.run).settings()["proxy"]).recipe.stretched(int(row["rung"]))
    inherited = row["init"] == "inherit"  # a from-scratch trial (or a fallback) starts without its parent's weights

    seconds: dict[str, float] = {}
    for name, (owner, attribute) in PHASES.items():
        setattr(owner, attribute, _timed(getattr(owner, attribute), name, seconds))
    start = time.monotonic()
    state, _ = initial_state(config, parent if inherited else None, args.run / "weights", seed)
    seconds["inherit"] = time.monotonic() - start
    result = train_module.train(config, args.data or default_dataset(), recipe, seed, init_state=state,
                                threads=args.threads)
    total = time.monotonic() - start
    print(f"{config.short}, step {args.step} {args.axis}, {recipe.epochs} epoch(s) of {recipe.name}, "
          f"{args.threads} thread(s): val top-1 {result.top1:.4f} (the journal's {row['top1']:.4f})\n")
    print("| phase | s | share |\n|---|---:|---:|")
    for name in ("inherit", *PHASES):
        print(f"| {name} | {seconds.get(name, 0.0):.2f} | {100 * seconds.get(name, 0.0) / total:.1f}% |")
    print(f"| **whole trial** | {total:.2f} | journal: {row['seconds']:.2f} s |")
    ok = journal[journal["status"] == "ok"]
    epochs_s = sum(m["clips_seen"] / m["clips_per_s"] for m in ok["metrics"] if m.get("clips_per_s"))
    print(f"\nThe run's {len(ok)} trials took {ok['seconds'].sum():.0f} s, {epochs_s:.0f} s of it in training epochs "
          f"({100 * epochs_s / ok['seconds'].sum():.0f}%; the journal's clips seen over clips/s).")


if __name__ == "__main__":
    main()
