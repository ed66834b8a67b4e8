"""Does trading one axis for another at the target pay? A screen of a search lever on expansion's found models (issue 28).

Expansion commits early to what wins cheap steps (frames) and cannot take it back; the samplers, which compare
models at the target trained from scratch, find models of fewer frames and larger crops that test better.
This screen takes expansion's found model F at a target (from a ``search_pays`` results CSV, one per search
seed) and offers every trade at F's cost: one full step of an axis backwards, then a partial step of another
axis onto the target (``x3dsearch.search.land``, inside the space's bounds, never dearer than F or the target).
F and every trade train from scratch with the proxy schedule (each with the epochs of its own cost, the search
seed; ``--stop-after-epochs`` pauses them early) and are ranked by val top-1 or by training loss; a trade is
kept only when it beats F strictly (ties between trades go to the cheaper), and ``--rounds`` repeats from it.
F and the kept model then train with the full schedule for each training seed in the same run, so the rows pair
them: kept minus found per search seed. Trials and trainings resume from ``OUT`` (trial folders keyed by the
recipe and the data); rows go to ``--results``, replacing only the same screen's rows of the same seeds.

    .venv/bin/python experiments/rebalance_screen.py --seeds 0 1 2 \\
        --data ~/.cache/x3dsearch/synthetic-small-seed0-val30-test30 \\
        --train-schedule cpu_long_full
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from x3dsearch.config import X3DConfig
from x3dsearch.cost import count_flops
from x3dsearch.data.kinetics import REFERENCE_FPS
from x3dsearch.schedule import load_schedule
from x3dsearch.search import LANDING_TOLERANCE, land
from x3dsearch.space import SearchSpace, crossed_bound, expand, load_space
from x3dsearch.train import TrainResult, train

from search_pays import Plan, train_once  # experiments/ is on sys.path when run as a script

def backward(space: SearchSpace) -> SearchSpace:
    """The space with every axis' multipliers inverted, so that ``expand`` takes one step back."""
    return replace(space, axes={axis: {name: 1 / m for name, m in fields.items()}
                                for axis, fields in space.axes.items()})


def trades(config: X3DConfig, space: SearchSpace, ceiling: float = math.inf) -> dict[str, X3DConfig]:
    """Every config at ``config``'s cost that is one full step back on one axis, then on to that cost on
    another, inside the space's bounds and at most ``ceiling`` FLOPs: ``{"-temporal+spatial": config, ...}``
    (duplicates dropped)."""
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
            cost = count_flops(traded)
            if undone or traded.key in seen or abs(cost - goal) > LANDING_TOLERANCE * goal or cost > ceiling:
                continue
            seen.add(traded.key)
            out[f"-{shrunk_axis}+{label}"] = traded
    return out


def score(row: Mapping[str, Any], rank_by: str) -> float:
    """What the screen ranks a trial by (higher is better): its val top-1, or minus its training loss."""
    return float(row["top1"]) if rank_by == "val_top1" else -float(row["train_loss"])


def pick(table: pd.DataFrame, found_key: str, rank_by: str) -> pd.Series:
    """The best trial of a round; a trade must beat the found model strictly, and ties between trades go to the
    cheaper one."""
    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise SystemExit(f"every training of the round around {found_key} failed; see the trials file")
    ok["score"] = [score(r, rank_by) for _, r in ok.iterrows()]
    ok["challenger"] = ok["key"] != found_key
    return ok.sort_values(["score", "challenger", "gflops"], ascending=[False, True, True]).iloc[0]


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _proxy(job: tuple[str, dict, str, dict, int, int | None, str]) -> dict:
    """One proxy training from scratch (a worker process); the row of the screen's trial table."""
    name, config_dict, data, recipe_dict, seed, stop, out_dir = job
    from x3dsearch.recipe import Recipe
    config = X3DConfig.from_dict(config_dict)
    result = train(config, data, Recipe.from_dict(recipe_dict), seed=seed, threads=1, out_dir=out_dir, resume=True,
                   stop_after_epochs=stop)
    return {"trade": name, "key": config.key, "config": json.dumps(config.to_dict(), sort_keys=True),
            "gflops": count_flops(config) / 1e9, "epochs": stop or recipe_dict["epochs"], "status": result.status,
            "top1": result.top1, "train_loss": result.loss, "seconds": result.seconds}


def screen_round(config: X3DConfig, space: SearchSpace, args: argparse.Namespace, seed: int, round_: int,
                 done: pd.DataFrame) -> pd.DataFrame:
    """Score ``config`` (the round's base) and its trades, each with the proxy epochs of its own cost (resumed from
    ``done``, the trials of the same base and settings); the round's trial table."""
    ceiling = max(count_flops(config), args.target * 1e9)  # never dearer than the base, or than the samplers' cap
    candidates = {"found" if round_ == 0 else "base": config, **trades(config, space, ceiling)}
    proxy = load_schedule(args.proxy_schedule)
    keys = {c.key for c in candidates.values()}  # rows of candidates this run no longer offers stay out
    rows = [r for _, r in done.iterrows() if r["key"] in keys] if len(done) else []
    have = {r["key"] for r in rows}
    jobs = []
    for name, c in candidates.items():
        if c.key in have:
            continue
        recipe = proxy.for_step(count_flops(c) / 1e9, args.clips).recipe.to_dict()
        folder = args.out / "proxy" / _digest(recipe, str(args.data), args.stop_after_epochs) / f"seed{seed}"
        jobs.append((name, c.to_dict(), str(args.data), recipe, seed, args.stop_after_epochs,
                     str(folder / hashlib.sha1(c.key.encode()).hexdigest()[:12])))
    print(f"search seed {seed}, round {round_}: {len(candidates)} candidates ({len(jobs)} to train) around "
          f"{config.short} at {count_flops(config) / 1e9:.3g} GFLOPs", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(_proxy, jobs):
            row.update(search_seed=seed, round=round_, base=config.key, setting=args.setting)
            print(f"  {row['trade']}: {row['status']} top-1 {row['top1']} train loss {row['train_loss']} "
                  f"({row['seconds']:.0f} s)", flush=True)
            pd.DataFrame([row]).to_csv(args.trials, mode="a", header=not args.trials.is_file(), index=False)
            rows.append(pd.Series(row))
    return pd.DataFrame(rows)


def _screen(config: X3DConfig, space: SearchSpace, args: argparse.Namespace, seed: int,
            trials: pd.DataFrame) -> tuple[X3DConfig, list[str], float]:
    """Up to ``--rounds`` rounds from the found model: the kept config, the trades taken and the CPU-s spent."""
    taken: list[str] = []
    seconds = 0.0
    for round_ in range(args.rounds):
        done = (trials[(trials["search_seed"] == seed) & (trials["base"] == config.key)
                       & (trials["setting"] == args.setting)] if len(trials) else trials)
        table = screen_round(config, space, args, seed, round_, done)
        seconds += float(table["seconds"].sum())
        best = pick(table, config.key, args.rank_by)
        print(f"  kept {best['trade']} (score {best['score']:.4f}; round {table['seconds'].sum():.0f} CPU-s)",
              flush=True)
        if best["key"] == config.key:
            break
        taken.append(best["trade"])
        config = X3DConfig.from_dict(json.loads(best["config"]))
    return config, taken, seconds


def _trained(plan: Plan, config: X3DConfig, seeds: list[int], jobs: int) -> list[TrainResult]:
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(train_once, [plan] * len(seeds), [config] * len(seeds), seeds))


def _rows(kind: str, config: X3DConfig, results: list[TrainResult], seeds: list[int], **common: Any) -> list[dict]:
    out = []
    for train_seed, result in zip(seeds, results):
        test = result.test.to_dict() if result.test is not None else {}
        out.append({**common, "kind": kind, "seed": train_seed, "status": result.status,
                    "gflops": count_flops(config) / 1e9, "val_top1": result.top1, "test_top1": test.get("top1"),
                    "test_per_group": json.dumps(test.get("per_group")),
                    "config": json.dumps(config.to_dict(), sort_keys=True)})
    return out


def _summary(rows: pd.DataFrame) -> str:
    """Kept minus found per search seed (means over the training seeds) and over the search seeds."""
    means = rows.groupby(["search_seed", "kind"])["test_top1"].mean().unstack() * 100
    diff = means["kept"] - means["found"]
    lines = [f"search seed {s}: found {r['found']:.1f}, kept {r['kept']:.1f}, kept - found {d:+.1f}"
             for (s, r), d in zip(means.iterrows(), diff)]

    def _mean(values: pd.Series) -> str:
        return f"{values.mean():.1f} +- {values.sem():.1f}"
    lines.append(f"over {len(means)} search seeds: found {_mean(means['found'])}, kept {_mean(means['kept'])}, "
                 f"kept - found {_mean(diff)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--found", type=Path, default=Path("experiments/results/search_pays_full16.csv"),
                        help="search_pays rows holding expansion's found models")
    parser.add_argument("--name", default="expand", help="the strategy rows to start from")
    parser.add_argument("--target", type=float, default=2.0, help="GFLOPs; no trade costs more than it or the found")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", type=Path, required=True,
                        help="the data of --found's rows: full trainings are shared with search_pays through "
                             "OUT/train, keyed by config, schedule and seed, not by data")
    parser.add_argument("--clips", type=int, default=384, help="training clips (sets the proxy's epochs)")
    parser.add_argument("--space", default="x3d_kinetics")
    parser.add_argument("--max-window", type=float, default=4.0,
                        help="seconds a clip may span (the synthetic benchmark's videos are 4 s)")
    parser.add_argument("--proxy-schedule", default="cpu_proxy",
                        help="the screen's trainings, each with the epochs of its own cost")
    parser.add_argument("--stop-after-epochs", type=int,
                        help="pause each screen training after that many epochs (its LR follows the whole schedule)")
    parser.add_argument("--rank-by", choices=("val_top1", "train_loss"), default="val_top1",
                        help="val top-1 at the end, or the training loss of the last epoch trained (lower wins)")
    parser.add_argument("--train-schedule", required=True)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/search_pays"),
                        help="its train/ folder is shared with search_pays; trials go to OUT/rebalance")
    parser.add_argument("--results", type=Path, default=Path("experiments/results/rebalance_screen.csv"))
    args = parser.parse_args()
    args.trials = args.results.with_name(args.results.stem + "_trials.csv")
    args.setting = _digest(load_schedule(args.proxy_schedule).to_dict(), str(args.data), args.stop_after_epochs,
                           args.clips)
    screen = f"{Path(args.proxy_schedule).stem}" + (f"@{args.stop_after_epochs}" if args.stop_after_epochs else "")
    ident = _digest(args.setting, args.rank_by, args.rounds, args.name, args.target, args.space, args.max_window,
                    load_schedule(args.train_schedule).to_dict(), args.train_seeds)  # what the results rows depend on
    screen += f" by {args.rank_by}, {args.rounds} round(s) [{ident}]"
    space = replace(load_space(args.space), max_window=args.max_window * REFERENCE_FPS)
    found = pd.read_csv(args.found)
    found = found[(found["name"] == args.name) & (found["target_gflops"] == args.target)]
    trials = pd.read_csv(args.trials, dtype={"setting": str, "base": str}) if args.trials.is_file() else pd.DataFrame()
    if (len(trials) and "setting" not in trials) or (args.results.is_file()
                                                      and "screen" not in pd.read_csv(args.results, nrows=1)):
        raise SystemExit(f"{args.results} or its _trials file was written by an earlier version of this screen; "
                         f"pass another --results")
    plan = Plan(data=args.data, space=args.space, proxy_schedule=args.proxy_schedule, full_schedule=args.train_schedule,
                out=args.out, threads=1, cpus_per_trial=1, max_concurrent=None)
    args.out = args.out / "rebalance"
    new: list[dict] = []
    for seed in args.seeds:
        rows = found[found["search_seed"] == seed]
        if rows.empty:
            raise SystemExit(f"{args.found}: no {args.name} row at {args.target:g} GFLOPs for search seed {seed}")
        start = X3DConfig.from_dict(json.loads(rows["config"].iloc[0]))
        kept, taken, seconds = _screen(start, space, args, seed, trials)
        common = {"screen": screen, "name": args.name, "search_seed": seed, "trades": " ".join(taken),
                  "screen_cpu_s": seconds}
        found_results = _trained(plan, start, args.train_seeds, args.jobs)
        kept_results = found_results if kept.key == start.key else _trained(plan, kept, args.train_seeds, args.jobs)
        new += _rows("found", start, found_results, args.train_seeds, **common)
        new += _rows("kept", kept, kept_results, args.train_seeds, **common)
        print(_summary(pd.DataFrame([r for r in new if r["search_seed"] == seed])), flush=True)
        old = pd.read_csv(args.results) if args.results.is_file() else pd.DataFrame(columns=["screen", "search_seed"])
        old = old[(old["screen"] != screen) | ~old["search_seed"].isin([r["search_seed"] for r in new])]
        pd.concat([old, pd.DataFrame(new)]).to_csv(args.results, index=False)  # other screens' and seeds' rows stay
    if len(args.seeds) > 1:
        print(_summary(pd.DataFrame(new)))


if __name__ == "__main__":
    main()
