"""Does trading one axis for another at the target pay? A screen of a search lever on expansion's found models (issue 28).

Expansion commits early to what wins cheap steps (frames) and cannot take it back; the samplers, which compare
models at the target trained from scratch, find models of fewer frames and larger crops that test better.
This screen takes expansion's found model F at a target (from a ``search_pays`` results CSV, one per search
seed) and offers every trade at F's cost: one full step of an axis backwards, then a partial step of another
axis onto the target (``x3dsearch.search.land``, inside the space's bounds). F and every trade train as the
samplers' candidates do (the proxy schedule from scratch, the epochs of a step at the target, the search seed)
and the best by validation top-1 is kept; ``--rounds`` repeats from it. The kept model then trains with the
full schedule for each training seed, as ``search_pays`` trains every found model, and is scored on the test
split. Trials and trainings resume from ``OUT``; rows go to ``--results``.

    .venv/bin/python experiments/rebalance_screen.py --seeds 0 1 2 \\
        --data ~/.cache/x3dsearch/synthetic-small-seed0-val30-test30 \\
        --train-schedule experiments/schedules/cpu_full_16.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd

from x3dsearch.config import X3DConfig
from x3dsearch.cost import count_flops
from x3dsearch.data.kinetics import REFERENCE_FPS
from x3dsearch.schedule import load_schedule
from x3dsearch.search import LANDING_TOLERANCE, land
from x3dsearch.space import SearchSpace, crossed_bound, expand, load_space
from x3dsearch.train import train

from search_pays import Plan, train_once  # experiments/ is on sys.path when run as a script

def backward(space: SearchSpace) -> SearchSpace:
    """The space with every axis' multipliers inverted, so that ``expand`` takes one step back."""
    return replace(space, axes={axis: {name: 1 / m for name, m in fields.items()}
                                for axis, fields in space.axes.items()})


def trades(config: X3DConfig, space: SearchSpace) -> dict[str, X3DConfig]:
    """Every config at ``config``'s cost that is one full step back on one axis, then on to that cost on
    another, inside the space's bounds: ``{"-temporal+spatial": config, ...}`` (duplicates dropped)."""
    goal, back = count_flops(config), backward(space)
    out: dict[str, X3DConfig] = {}
    seen = {config.key}
    for shrunk_axis in space.axes:
        shrunk = expand(config, shrunk_axis, space=back)
        if count_flops(shrunk) >= goal or crossed_bound(config, shrunk, space) is not None:
            continue
        for grown_axis in space.axes:
            if grown_axis == shrunk_axis:
                continue
            traded, label, _ = land(shrunk, grown_axis, goal, space)
            undone = shrunk_axis in label.split("+")  # topped up with the axis it shrank: a partial undo
            if undone or traded.key in seen or abs(count_flops(traded) - goal) > LANDING_TOLERANCE * goal:
                continue
            seen.add(traded.key)
            out[f"-{shrunk_axis}+{label}"] = traded
    return out


def _proxy(job: tuple[str, dict, str, dict, int, str]) -> dict:
    """One proxy training from scratch (a worker process); the row of the screen's trial table."""
    name, config_dict, data, recipe_dict, seed, out_dir = job
    from x3dsearch.recipe import Recipe
    config = X3DConfig.from_dict(config_dict)
    result = train(config, data, Recipe.from_dict(recipe_dict), seed=seed, threads=1, out_dir=out_dir, resume=True)
    return {"trade": name, "key": config.key, "config": json.dumps(config.to_dict(), sort_keys=True),
            "gflops": count_flops(config) / 1e9, "status": result.status, "top1": result.top1,
            "seconds": result.seconds}


def screen_round(config: X3DConfig, space: SearchSpace, args: argparse.Namespace, seed: int, round_: int,
                 done: pd.DataFrame) -> pd.DataFrame:
    """Score ``config`` and its trades (resumed from ``done``); the round's trial table."""
    candidates = {"kept": config, **trades(config, space)}
    policy = load_schedule(args.proxy_schedule).for_step(count_flops(config) / 1e9, args.clips)
    rows = [r for _, r in done.iterrows()] if len(done) else []
    have = {r["key"] for r in rows}
    folder = args.out / "proxy" / Path(args.proxy_schedule).stem / f"seed{seed}"
    jobs = [(name, c.to_dict(), str(args.data), policy.recipe.to_dict(), seed,
             str(folder / hashlib.sha1(c.key.encode()).hexdigest()[:12]))
            for name, c in candidates.items() if c.key not in have]
    print(f"search seed {seed}, round {round_}: {len(candidates)} candidates ({len(jobs)} to train) around "
          f"{config.short} at {count_flops(config) / 1e9:.3g} GFLOPs", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(_proxy, jobs):
            row.update(search_seed=seed, round=round_, proxy_schedule=Path(args.proxy_schedule).stem)
            print(f"  {row['trade']}: {row['status']} top-1 {row['top1']} ({row['seconds']:.0f} s)", flush=True)
            pd.DataFrame([row]).to_csv(args.trials, mode="a", header=not args.trials.is_file(), index=False)
            rows.append(pd.Series(row))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--found", type=Path, default=Path("experiments/results/search_pays_full16.csv"),
                        help="search_pays rows holding expansion's found models")
    parser.add_argument("--name", default="expand", help="the strategy rows to start from")
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=384, help="training clips (sets the proxy's epochs)")
    parser.add_argument("--space", default="x3d_kinetics")
    parser.add_argument("--max-window", type=float, default=4.0,
                        help="seconds a clip may span (the synthetic benchmark's videos are 4 s)")
    parser.add_argument("--proxy-schedule", default="cpu_proxy")
    parser.add_argument("--train-schedule", required=True)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/search_pays"),
                        help="its train/ folder is shared with search_pays; trials go to OUT/rebalance")
    parser.add_argument("--results", type=Path, default=Path("experiments/results/rebalance_screen.csv"))
    args = parser.parse_args()
    args.trials = args.results.with_name(args.results.stem + "_trials.csv")
    space = replace(load_space(args.space), max_window=args.max_window * REFERENCE_FPS)
    found = pd.read_csv(args.found)
    found = found[(found["name"] == args.name) & (found["target_gflops"] == args.target)]
    trials = pd.read_csv(args.trials) if args.trials.is_file() else pd.DataFrame()
    plan = Plan(data=args.data, space=args.space, proxy_schedule=args.proxy_schedule, full_schedule=args.train_schedule,
                out=args.out, threads=1, cpus_per_trial=1, max_concurrent=None)
    args.out = args.out / "rebalance"
    kept_rows = []
    for seed in args.seeds:
        rows = found[found["search_seed"] == seed]
        if rows.empty:
            raise SystemExit(f"{args.found}: no {args.name} row at {args.target:g} GFLOPs for search seed {seed}")
        config = X3DConfig.from_dict(json.loads(rows["config"].iloc[0]))
        for round_ in range(args.rounds):
            done = trials[(trials["search_seed"] == seed) & (trials["round"] == round_)
                          & (trials["proxy_schedule"] == Path(args.proxy_schedule).stem)] if len(trials) else trials
            table = screen_round(config, space, args, seed, round_, done)
            ok = table[table["status"] == "ok"].sort_values(["top1", "gflops"], ascending=[False, True])
            best = X3DConfig.from_dict(json.loads(ok["config"].iloc[0]))
            print(f"  kept {ok['trade'].iloc[0]}: {best.short} (proxy top-1 {ok['top1'].iloc[0]:.3f}, round "
                  f"{table['seconds'].sum():.0f} CPU-s)", flush=True)
            if best.key == config.key:
                break
            config = best
        tests = []
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for train_seed, result in zip(args.train_seeds,
                                          pool.map(train_once, [plan] * len(args.train_seeds), [config] * len(args.train_seeds),
                                                   args.train_seeds)):
                test = result.test.to_dict() if result.test is not None else {}
                tests.append(test.get("top1"))
                kept_rows.append({"search_seed": seed, "seed": train_seed, "status": result.status,
                                  "gflops": count_flops(config) / 1e9, "val_top1": result.top1,
                                  "test_top1": test.get("top1"), "test_per_group": json.dumps(test.get("per_group")),
                                  "config": json.dumps(config.to_dict(), sort_keys=True)})
        print(f"search seed {seed}: {config.short} test top-1 {statistics.mean(t for t in tests if t is not None):.3f}",
              flush=True)
    pd.DataFrame(kept_rows).to_csv(args.results, index=False)
    per_seed = pd.DataFrame(kept_rows).groupby("search_seed")["test_top1"].mean()
    sem = per_seed.std() / len(per_seed) ** 0.5 if len(per_seed) > 1 else float("nan")
    print(f"rebalanced expansion: {100 * per_seed.mean():.1f} +- {100 * sem:.1f} test top-1 over "
          f"{len(per_seed)} search seeds ({', '.join(f'{100 * v:.1f}' for v in per_seed)})")


if __name__ == "__main__":
    main()
