"""Proxy fidelity: does the search's proxy rank one-step candidates as long trainings do?

Four candidate sets, the one-step expansions of X2D, of X3D-XS, of XS+fast (1.2 GFLOPs, a config on
a typical path to 6 GFLOPs) and ``late``: the base of the last full step of the default search to 2
GFLOPs (search seed 0, ``16x4 112px w2 b1 d4.84``, 1.1 GFLOPs), whose bounded space leaves it three
candidates (spatial, width, bottleneck), the kind of step that decides the found model. For each candidate:

* the **reference**: a long from-scratch training on an independently seeded, bigger copy of the
  benchmark (``make-data --seed 11 --videos-per-class 96``: 1152 train clips), tested on its 360 val
  clips, for ``--ref-seeds`` seeds; at least ``--ref-ratio`` (6) times the clip-passes the default
  proxy gives a candidate of that set (4 epochs for a 2-epoch proxy over 384 clips); cached in
  ``experiments/results/fidelity_reference.csv`` (its ``mirrored`` column: ``yes`` for the trainings of before
  2026-12-06, when training clips were mirrored, read only with ``--mirrored-reference``): a set whose cache holds a
  complete reference of at least that length (e.g. 6 epochs) uses it, otherwise the minimum length is trained. A
  reference is a reference only when doubling its training leaves its ranking as it is: each set is also
  trained at twice its length (unless ``--no-converge``), the script prints Kendall tau between the two
  lengths' means and whether their top two are the same two axes, and doubles the length until tau >=
  0.8 with the top two kept (or ``--max-ref-epochs``); the scores use the length that passed;
* the **proxy**: one ``x3dsearch step`` from the set's base on the default benchmark, exactly as
  ``expand`` would take it, per proxy seed (``--proxy-schedule``, ``--proxy-init``).

Per set and proxy seed it reports Kendall tau of the proxy's scores against the reference mean,
the reference rank of the proxy's winner, the regret (best reference top-1 minus the chosen one's)
and the proxy's CPU-seconds; and the reference's own reliability (tau of each seed against the mean
of the others), the ceiling any proxy can reach.

    .venv/bin/python experiments/proxy_fidelity.py --reference-only          # the reference alone
    .venv/bin/python experiments/proxy_fidelity.py --reference-only --sets late   # CPU-hours
    .venv/bin/python experiments/proxy_fidelity.py [--proxy-schedule cpu_proxy] [--proxy-init inherit]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from x3dsearch import X3DConfig, count_flops, preset
from x3dsearch.data.cache import cache_root
from x3dsearch.data.kinetics import read_split
from x3dsearch.data.synthetic import forbid_mirroring, make_synthetic
from x3dsearch.rundir import RunDir
from x3dsearch.runner import ExpandSettings, run_step
from x3dsearch.schedule import load_schedule
from x3dsearch.search import step_candidates
from x3dsearch.space import expand, load_space
from x3dsearch.train import train

RESULTS = Path(__file__).parent / "results"
REFERENCE_RUNS = Path("runs/fidelity_reference_noflip")  # the reference trainings' checkpoints (not committed; the
# mirrored ones of before 2026-12-06 were in runs/fidelity_reference)
REFERENCE_CSV = RESULTS / "fidelity_reference.csv"
_REF_FIELDS = ["set", "axis", "key", "seed", "epochs", "top1", "seconds", "mirrored"]  # mirrored: yes before 2026-12-06
# The late set's base: step 8 of the default search to 2 GFLOPs, search seed 0 (its path in
# runs/search_pays/expand-2g-seed0/path.json, experiments/search_pays.py), the base of that search's last full step.
LATE_BASE = X3DConfig(frames=16, stride=4, crop=112, width=2.0, bottleneck=1.0, depth=4.84, num_classes=12)
CONVERGED_TAU = 0.8
MIRRORED_HELP = ("score against the cached references trained before 2026-12-06, when the benchmark's training flip "
                 "merged two texture classes (what docs/proxy-fidelity.md's tables measured), and only step runs of "
                 "that time; trains no reference")


def candidate_sets() -> dict[str, tuple[X3DConfig, dict[str, X3DConfig]]]:
    """Name -> (base, {axis: one-step candidate}) for the four sets, at the benchmark's 12 classes."""
    space = load_space()
    xs = preset("XS", num_classes=12)
    bases = {"X2D": preset("X2D", num_classes=12), "XS": xs, "XS+fast": expand(xs, "fast", space=space),
             "late": LATE_BASE}
    return {name: (base, {c.axis: c.config for c in step_candidates(base, space, 1)})
            for name, base in bases.items()}


def reference_data() -> Path:
    """The bigger, independently seeded copy of the benchmark (generated once, then reused; a copy rendered while
    training mirrored clips is told not to)."""
    root = cache_root() / "synthetic-small-seed11-96"
    if not (root / "README.md").is_file():
        make_synthetic(root, seed=11, videos_per_class=96)
    forbid_mirroring(root)
    return root


def reference_epochs(base: X3DConfig, ratio: float, clips: int = 1152) -> int:
    """Epochs over the reference's ``clips`` that give ``ratio`` x the default proxy's clip-passes for this set."""
    proxy = load_schedule("cpu_proxy")
    proxy_passes = proxy.for_step(2 * count_flops(base) / 1e9, 384).recipe.epochs * 384
    return max(4, math.ceil(ratio * proxy_passes / clips))


def _cached_length(name: str, candidates: int, seeds: list[int], minimum: int,
                   done: set[tuple[str, str, int, int]]) -> int:
    """The shortest complete cached reference length of a set that is at least ``minimum``, else ``minimum``."""
    lengths = sorted({e for s, _, _, e in done if s == name and e >= minimum})
    for length in lengths:
        if sum(1 for s, _, seed, e in done if s == name and e == length and seed in seeds) >= candidates * len(seeds):
            return length
    return minimum


def _reference_job(job: tuple[str, str, dict[str, Any], str, int, int]) -> dict[str, Any]:
    """One reference training, checkpointed every epoch under ``runs/fidelity_reference`` so a kill loses at most an
    epoch (hours at the longer lengths)."""
    set_name, axis, config, data, seed, epochs = job
    schedule = load_schedule("cpu_proxy").recipe.replace(name="fidelity_reference", epochs=epochs)
    model = X3DConfig.from_dict(config)
    out = REFERENCE_RUNS / f"{model.key}-seed{seed}-e{epochs}"
    result = train(model, data, schedule, seed=seed, threads=1, out_dir=out, resume=True)
    return {"set": set_name, "axis": axis, "key": model.key, "seed": seed, "epochs": epochs,
            "top1": result.top1 if result.status == "ok" else "", "seconds": result.seconds,
            "mirrored": "yes" if read_split(data, "train").horizontal_flip else "no"}


@contextlib.contextmanager
def results_writer(path: Path, fields: list[str]) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Append rows to a results CSV, its header once and each row flushed, so a killed run loses nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != fields:
            sys.exit(f"{path} has the columns {header}, not {fields}: rows appended now would not line up "
                     "(a copy from before a column was added: add it to every row, or write to another file)")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if f.tell() == 0:
            writer.writeheader()

        def write(row: dict[str, Any]) -> None:
            writer.writerow(row)
            f.flush()

        yield write


def _read_reference(mirrored: bool = False) -> list[dict[str, Any]]:
    """The cached reference trainings without mirrored clips, or (``mirrored``) those of before 2026-12-06, when the
    benchmark's training flip merged two texture classes: the two never stand in for each other."""
    if not REFERENCE_CSV.is_file():
        return []
    with open(REFERENCE_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "mirrored" not in rows[0]:
        sys.exit(f"{REFERENCE_CSV} has no mirrored column: its rows were trained on mirrored clips; add the column "
                 "with 'yes' on every row")
    return [r for r in rows if r["mirrored"] == ("yes" if mirrored else "no")]


def convergence(short: dict[str, float], long: dict[str, float]) -> tuple[float, bool]:
    """Kendall tau between a set's reference means (axis -> top-1) at L and at 2L epochs, and whether the two
    best axes are the same two at both lengths."""
    axes = sorted(short)
    tau = kendall_tau([short[a] for a in axes], [long[a] for a in axes])
    return tau, set(sorted(axes, key=lambda a: -short[a])[:2]) == set(sorted(axes, key=lambda a: -long[a])[:2])


def _train_references(jobs: list[tuple[str, str, dict[str, Any], str, int, int]], workers: int) -> None:
    """Train the reference ``jobs`` (cheapest first), each row appended to the cache as it ends."""
    jobs = sorted(jobs, key=lambda job: (job[5], count_flops(X3DConfig.from_dict(job[2]))))
    if not jobs:
        return
    with results_writer(REFERENCE_CSV, _REF_FIELDS) as write, mp.get_context("spawn").Pool(workers) as pool:
        for i, row in enumerate(pool.imap_unordered(_reference_job, jobs), 1):
            write(row)
            print(f"reference {i}/{len(jobs)}: {row['set']} +{row['axis']} seed {row['seed']}, {row['epochs']} "
                  f"epochs: top1 {row['top1']} ({row['seconds']:.0f} s)", flush=True)


def _done(mirrored: bool = False) -> set[tuple[str, str, int, int]]:
    """(set, axis, seed, epochs) of every cached reference training (of the mirrored era if asked)."""
    return {(r["set"], r["axis"], int(r["seed"]), int(r["epochs"])) for r in _read_reference(mirrored)}


def _set_table(name: str, epochs: int, seeds: list[int], mirrored: bool = False) -> dict[str, list[float]]:
    """axis -> the cached top-1 per seed of set ``name``'s reference at ``epochs`` (NaN for a failed training)."""
    table: dict[str, list[float]] = {}
    for r in sorted(_read_reference(mirrored), key=lambda r: int(r["seed"])):
        if r["set"] == name and int(r["epochs"]) == epochs and int(r["seed"]) in seeds:
            table.setdefault(r["axis"], []).append(float(r["top1"]) if r["top1"] else float("nan"))
    return table


def run_reference(seeds: list[int], ratio: float, workers: int, train_missing: bool = True,
                  sets: list[str] | None = None, converge: bool = True,
                  max_epochs: int = 64, mirrored: bool = False) -> dict[tuple[str, str], list[float]]:
    """Train what the cache lacks for ``sets`` (default all; unless told not to), with ``converge`` until each
    set's reference keeps its ranking when its training doubles; return (set, axis) -> top-1 per seed.
    ``mirrored`` reads the references of before 2026-12-06 instead, and trains nothing."""
    train_missing = train_missing and not mirrored
    data = str(reference_data()) if train_missing else ""
    if data and read_split(data, "train").horizontal_flip:
        sys.exit(f"the reference copy {data} mirrors its training clips (its augment.json allows it), as the "
                 "benchmark did before 2026-12-06: forbid it ({\"horizontal_flip\": false}) first")
    sets_ = candidate_sets()
    done = _done(mirrored)
    epochs = {name: _cached_length(name, len(cands), seeds, reference_epochs(base, ratio), done)
              for name, (base, cands) in sets_.items()}
    chosen = [name for name in sets_ if sets is None or name in sets]
    started = time.time()

    def missing(name: str, length: int) -> list[tuple[str, str, dict[str, Any], str, int, int]]:
        if not train_missing:
            return []
        done = _done(mirrored)  # read again: the trainings before this call added rows
        return [(name, axis, config.to_dict(), data, seed, length) for axis, config in sets_[name][1].items()
                for seed in seeds if (name, axis, seed, length) not in done]

    _train_references([job for name in chosen for job in missing(name, epochs[name])], workers)
    for name in chosen if converge else []:
        while True:
            length = epochs[name]
            _train_references(missing(name, 2 * length), workers)
            short, long = (_set_table(name, e, seeds, mirrored) for e in (length, 2 * length))
            if sum(map(len, long.values())) < len(sets_[name][1]) * len(seeds):
                print(f"{name}: no complete reference at {2 * length} epochs to check {length} against", flush=True)
                break
            tau, kept = convergence({a: float(np.mean(v)) for a, v in short.items()},
                                    {a: float(np.mean(v)) for a, v in long.items()})
            settled = tau >= CONVERGED_TAU and kept
            print(f"{name}: reference at {length} and {2 * length} epochs: tau {tau:+.2f}, top two kept: "
                  f"{'yes' if kept else 'no'}: {'converged' if settled else 'not converged'}", flush=True)
            if settled or 4 * length > max_epochs:
                break
            epochs[name] = 2 * length
    rows = [r for r in _read_reference(mirrored) if int(r["epochs"]) == epochs[r["set"]] and int(r["seed"]) in seeds]
    cpu = sum(float(r["seconds"]) for r in rows)
    print(f"reference: epochs per set {epochs}; {len(rows)} trainings, {cpu / 60:.1f} CPU-minutes in all "
          f"({(time.time() - started) / 60:.1f} min wall now)")
    return {(name, axis): per_seed for name in sets_
            for axis, per_seed in _set_table(name, epochs[name], seeds, mirrored).items()}


def reference_means(seeds: tuple[int, ...] = (0, 1, 2), ratio: float = 6.0,
                    mirrored: bool = False) -> dict[str, dict[str, float]]:
    """set -> axis -> the cached reference's mean top-1: the lengths and seeds that proxy_fidelity.py
    scores against by default (its report on stdout is not repeated here); ``mirrored``: those of before
    2026-12-06."""
    with contextlib.redirect_stdout(io.StringIO()):
        table = run_reference(list(seeds), ratio, 1, train_missing=False, mirrored=mirrored)
    means: dict[str, dict[str, float]] = {}
    for (name, axis), per_seed in table.items():
        means.setdefault(name, {})[axis] = float(np.mean(per_seed))
    return means


def kendall_tau(a: Any, b: Any) -> float:
    """Kendall's tau-b (ties counted as in scipy's default); NaN when either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float(np.sum(da * db) / denom) if denom else float("nan")


def reliability(per_seed: dict[str, list[float]]) -> float:
    """Mean tau of each reference seed against the mean of the other seeds (the proxy's ceiling)."""
    axes = list(per_seed)
    matrix = np.array([per_seed[a] for a in axes])  # axes x seeds
    taus = []
    for s in range(matrix.shape[1]):
        others = np.delete(matrix, s, axis=1).mean(axis=1)
        taus.append(kendall_tau(matrix[:, s], others))
    return float(np.nanmean(taus))


def run_proxies(schedule: str, init: str, seeds: list[int], out: Path,
                sets: list[str], cpus: int = 2) -> dict[tuple[str, int], dict[str, Any]]:
    """``x3dsearch step`` from each set's base for each proxy seed (resumable run folders under ``out``).

    One local Ray serves every step (each step's session finds it running and leaves it up).
    """
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results = {}
    for name, (base, _) in candidate_sets().items():
        if name not in sets:
            continue
        for seed in seeds:
            run_dir = out / f"{name}-seed{seed}"
            cost = max(count_flops(c) for c in candidate_sets()[name][1].values()) / 1e9
            settings = ExpandSettings(target_gflops=cost, out=str(run_dir), proxy_schedule=schedule,
                                      proxy_init=init, seed=seed, final_training=False)
            results[(name, seed)] = run_step(settings, base, resume=run_dir.exists(), quiet=True)
            print(f"proxy {name} seed {seed}: chose {results[(name, seed)]['chosen']} "
                  f"({results[(name, seed)]['wall_seconds']:.0f} s)", flush=True)
    return results


def judge(scores: dict[str, float | None], reference: dict[str, float], chosen: str | None = None) -> dict[str, float]:
    """Kendall tau of proxy scores against the reference means, the reference rank of the choice
    (default: the best-scored axis) and its regret in points."""
    axes = sorted(reference)
    tau = kendall_tau([scores[a] if scores[a] is not None else -1.0 for a in axes], [reference[a] for a in axes])
    ranked = sorted(axes, key=lambda a: -reference[a])
    if chosen is None:
        chosen = max(axes, key=lambda a: -1.0 if scores[a] is None else scores[a])
    return {"tau": tau, "winner_rank": ranked.index(chosen) + 1, "regret": (reference[ranked[0]] - reference[chosen]) * 100}


def journal_scores(run: Path) -> dict[str, dict[int, float]]:
    """axis -> seed offset -> top-1 of a step run's candidates, from its journal."""
    scores: dict[str, dict[int, float]] = {}
    for line in (run / "journal.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "expand" and entry.get("top1") is not None:
            scores.setdefault(entry["axis"], {})[int(entry.get("seed_offset") or 0)] = entry["top1"]
    return scores


def run_mirrored(run_dir: str | Path) -> bool:
    """Whether a step run's trainings mirrored their clips (runs recorded before 2026-12-06 did)."""
    return bool(RunDir(run_dir).settings_as_run()["horizontal_flip"])


def score_proxy(step: dict[str, Any], reference: dict[str, float]) -> dict[str, float]:
    """:func:`judge` of a step's scores and choice, plus its CPU-seconds."""
    return {**judge({c["axis"]: c["top1"] for c in step["candidates"]}, reference, step["chosen"]),
            "cpu_s": sum(c["seconds"] or 0.0 for c in step["candidates"]) + step["base_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ref-ratio", type=float, default=6.0,
                        help="reference clip-passes per candidate over the default proxy's (default 6)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--converge", action=argparse.BooleanOptionalAction, default=True,
                        help="check each set's reference against twice its length (training what the cache lacks) "
                             f"and double it until tau between the two is at least {CONVERGED_TAU} with the same top "
                             "two (default; --no-converge scores against the shortest cached reference)")
    parser.add_argument("--max-ref-epochs", type=int, default=64, help="the longest reference --converge trains")
    parser.add_argument("--cached-reference", action="store_true",
                        help="train no reference; score only the sets whose reference is complete")
    parser.add_argument("--mirrored-reference", action="store_true", help=MIRRORED_HELP)
    parser.add_argument("--proxy-schedule", default="cpu_proxy",
                        help="the proxy measured (default: cpu_proxy, the toolkit's default before 2026-12-05, "
                             "which docs/proxy-fidelity.md's table measures)")
    parser.add_argument("--proxy-init", default="inherit", choices=["inherit", "scratch"])
    parser.add_argument("--proxy-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/fidelity-noflip",
                        help="folder of the proxies' step runs (resumable; those of before 2026-12-06 mirrored their "
                             "clips, in runs/fidelity)")
    parser.add_argument("--sets", nargs="+", default=list(candidate_sets()),
                        help="candidate sets to train the reference of and to score")
    parser.add_argument("--ray-cpus", type=int, default=2,
                        help="CPUs of the proxies' local Ray (1 lets two variants run side by side)")
    args = parser.parse_args()
    if args.mirrored_reference and not args.reference_only:
        sys.exit("--mirrored-reference goes with --reference-only: proxies now train without mirroring, so they "
                 "cannot be scored against references that mirrored")
    reference = run_reference(args.ref_seeds, args.ref_ratio, args.workers, not args.cached_reference, args.sets,
                              args.converge, args.max_ref_epochs, args.mirrored_reference)
    means: dict[str, dict[str, float]] = {}
    for name, (_, cands) in candidate_sets().items():
        per_seed = {axis: v for (s, axis), v in reference.items() if s == name}
        if len(per_seed) < len(cands) or any(len(v) < len(args.ref_seeds) for v in per_seed.values()):
            print(f"{name}: reference incomplete ({sum(map(len, per_seed.values()))} of "
                  f"{len(cands) * len(args.ref_seeds)} trainings), not scored")
            continue
        means[name] = {axis: float(np.mean(v)) for axis, v in per_seed.items()}
        print(f"{name}: reliability tau {reliability(per_seed):+.2f}; reference mean top-1 "
              + ", ".join(f"{a} {m:.1%}" for a, m in sorted(means[name].items(), key=lambda kv: -kv[1])))
    if args.reference_only:
        return
    variant = f"{Path(args.proxy_schedule).stem}-{args.proxy_init}"
    proxies = run_proxies(args.proxy_schedule, args.proxy_init, args.proxy_seeds, Path(args.out) / variant, args.sets,
                          args.ray_cpus)
    rows = [{"set": name, "seed": seed, **score_proxy(step, means[name])} for (name, seed), step in proxies.items()
            if name in means]
    if not rows:
        return
    print(f"\nproxy {variant}\n| set | seed | tau | winner's reference rank | regret (points) | CPU-s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['seed']} | {r['tau']:+.2f} | {r['winner_rank']} | {r['regret']:.1f} | {r['cpu_s']:.0f} |")
    top2 = sum(r["winner_rank"] <= 2 for r in rows)
    print(f"\nmean tau {np.mean([r['tau'] for r in rows]):+.2f}, winner in the reference top 2 in {top2} of "
          f"{len(rows)}, mean regret {np.mean([r['regret'] for r in rows]):.1f} points, "
          f"CPU {sum(r['cpu_s'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
