"""What each ``x3dsearch`` subcommand does: one handler per subcommand, called by :mod:`x3dsearch.cli` (which only
declares the arguments) with the parsed arguments; a user's mistake is raised as a one-line UserError.

The handlers are the package's boundary: they read models, schedules and search spaces by name (a search's
through :func:`x3dsearch.runspec.resolve`, once) and pass objects on.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from typing import TYPE_CHECKING, Any

from .config import X3DConfig, preset, preset_names
from .cost import cost_breakdown, count_flops, count_params
from .errors import UserError
from .search import check_land_within
from .tables import config_table

if TYPE_CHECKING:
    from pathlib import Path

    from .recipe import Recipe
    from .runspec import ExpandSettings, RunSpec

__all__ = ["flops", "presets", "expand", "step", "search", "compare", "train", "evaluate", "report", "plot", "export",
           "latency", "make_data", "model_from_args"]


def _check_max_window(args: argparse.Namespace) -> float | None:
    """``--max-window``, which must be positive when given."""
    if args.max_window is not None and not args.max_window > 0:
        raise UserError("--max-window must be a positive number of seconds")
    return args.max_window


def _data_root(data: str | None) -> "Path":
    """The folder of ``--data``, or the synthetic benchmark (generated on first use)."""
    from pathlib import Path

    if data is None:
        from .data import default_dataset

        return Path(default_dataset())
    root = Path(data).expanduser()
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    return root


def _dispatch_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The Ray dispatch settings of ``expand``, ``search`` and ``step``, validated."""
    for flag, low, kind in (("cpus_per_worker", 1e-9, "positive"), ("max_concurrent", 1, "positive"),
                            ("max_failures", 0, "zero or more"), ("gpus_per_worker", 0, "zero or more")):
        value = getattr(args, flag)
        if value is not None and not low <= value < math.inf:  # NaN fails too
            raise UserError(f"--{flag.replace('_', '-')} must be {kind}, got {value:g}")
    return {"address": args.address, "storage": args.storage, "cpus_per_trial": args.cpus_per_worker,
            "gpus_per_trial": args.gpus_per_worker, "max_concurrent": args.max_concurrent,
            "max_failures": args.max_failures}


def _settings_from_args(args: argparse.Namespace, strategy: str) -> "ExpandSettings":
    """The run settings shared by every search strategy, from the common flags."""
    from .runspec import ExpandSettings

    flag, target = ("--target-ms", args.target_ms) if args.target_ms is not None else ("--target-gflops",
                                                                                       args.target_gflops)
    if not target > 0:
        raise UserError(f"{flag} must be positive")
    if args.target_ms is not None and args.ceiling_gflops is not None:
        raise UserError("--ceiling-gflops is a FLOP ceiling; with --target-ms the ceiling is 2x the target")
    if args.latency_batch < 1 or args.latency_threads < 1:
        raise UserError("--latency-batch and --latency-threads must be positive")
    latency_options = [f"--latency-{name}" for name, default in (("device", "cpu"), ("batch", 1), ("threads", 1),
                                                                 ("node", None))
                       if getattr(args, f"latency_{name}") != default]
    if args.target_ms is None and latency_options:
        raise UserError(f"{', '.join(latency_options)} only apply with --target-ms (a latency budget)")
    if args.full_workers is not None and args.full_workers < 1:
        raise UserError("--full-workers must be positive")
    check_land_within(args.land_within)
    unit = "g" if args.target_ms is None else "ms"
    out = args.output or f"runs/{strategy}-{target:g}{unit}-seed{args.seed}"
    return ExpandSettings(
        target_gflops=args.target_gflops, out=out, space=args.space, data=args.data,
        proxy_schedule=args.proxy_schedule, proxy_init=args.proxy_init, final_init=args.final_init,
        full_schedule=args.full_schedule,
        seed=args.seed, ceiling_gflops=args.ceiling_gflops, evaluate_contractions=args.evaluate_contractions,
        land_within=args.land_within if strategy == "expand" else 1.0,  # sampling strategies never land
        final_training=args.final_training, full_workers=args.full_workers, max_window=_check_max_window(args),
        target_ms=args.target_ms, latency_device=args.latency_device, latency_batch=args.latency_batch,
        latency_threads=args.latency_threads, latency_node=args.latency_node, **_dispatch_fields(args))


def _resolved(args: argparse.Namespace, settings: "ExpandSettings", expansion: bool = True) -> "RunSpec":
    """The run resolved once; with --dry-run, without rendering the default data and with what was found printed."""
    from .rundir import RunDir
    from .runspec import resolve

    spec = resolve(settings, dry_run=args.dry_run)
    if args.dry_run:
        print("\n".join(spec.describe(resume=args.resume, expansion=expansion)))
    elif args.resume and not RunDir(settings.out).exists():  # a mistyped folder would otherwise start afresh quietly
        print(f"x3dsearch: nothing to resume in {settings.out} (no run.yaml): starting a new run there",
              file=sys.stderr)
    return spec


def _print_summary(args: argparse.Namespace, summary: dict) -> None:
    """The end-of-run summary: JSON with --json, the table unless --quiet."""
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2))
    elif not args.quiet:
        print(summary["table"])


def model_from_args(args: argparse.Namespace, default: str | None = None) -> X3DConfig | None:
    """The model of ``--preset`` or ``--config`` (or step's old ``--from NAME|FILE``), else preset ``default``."""
    if args.config is not None:
        if not args.config:  # an empty --config "" is a mistake, not "no config"
            raise UserError("--config needs the path of a config file")
        return X3DConfig.from_yaml(args.config)
    name, base = args.preset or default, getattr(args, "base", None)
    if base:
        if base.upper() not in {n.upper() for n in preset_names()}:
            return X3DConfig.from_yaml(base)
        name = base
    return preset(name) if name else None


def flops(args: argparse.Namespace) -> int:
    """Print the cost of one model, in total and per part."""
    config = model_from_args(args, default="X2D")
    parts = cost_breakdown(config)
    total_flops, total_params = count_flops(config), count_params(config)
    if args.json:
        print(json.dumps({"config": config.to_dict(), "flops": total_flops, "gflops": total_flops / 1e9,
                          "params": total_params,
                          "parts": {k: {"flops": f, "params": p} for k, (f, p) in parts.items()}},
                         indent=2))
        return 0
    print(f"{config.short}  ({config.frames} frames x stride {config.stride}, {config.crop}x{config.crop}, "
          f"{config.num_classes} classes)")
    print(f"{'part':<6} {'GFLOPs':>10} {'share':>7} {'params':>12}")
    for name, (flops, params) in parts.items():
        print(f"{name:<6} {flops / 1e9:>10.4f} {flops / total_flops:>7.1%} {params:>12,}")
    print(f"{'total':<6} {total_flops / 1e9:>10.4f} {'':>7} {total_params:>12,}")
    return 0


def presets(args: argparse.Namespace) -> int:
    """Print the presets as a table or JSON."""
    configs = {name: preset(name) for name in preset_names()}
    rows = [{"preset": name, "frames_x_stride": f"{c.frames}x{c.stride}", "crop": c.crop, "width": c.width,
             "bottleneck": c.bottleneck, "depth": c.depth, "gflops": round(count_flops(c) / 1e9, 4),
             "params": count_params(c)} for name, c in configs.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(config_table(f"{'preset':<7}", ((f"{r['preset']:<7}", configs[r["preset"]], r["gflops"], r["params"])
                                          for r in rows), "params", factors=">6g", gflops=">10.3f", last_format=">12,"))
    return 0


def expand(args: argparse.Namespace) -> int:
    """Run (or with --dry-run, plan) a progressive expansion."""
    from .runner import plan_text, run_expand

    spec = _resolved(args, _settings_from_args(args, "expand"))
    if args.dry_run:
        print(plan_text(spec))
        return 0
    _print_summary(args, run_expand(spec, resume=args.resume, quiet=args.quiet))
    return 0


def step(args: argparse.Namespace) -> int:
    """Take one step from ``--from`` and print the candidates' scores and the choice."""
    import shutil
    import tempfile

    from .runner import run_step
    from .runspec import ExpandSettings, resolve
    from .search import step_candidates
    from .space import load_space

    base = model_from_args(args)
    assert base is not None  # the parser requires a model
    space = load_space(args.space)
    top = max((c.gflops for c in step_candidates(base, space, 1)), default=None)
    if top is None:
        raise UserError(f"{base.short} sits at the bounds of every axis of the space; no step to take")
    dispatch = _dispatch_fields(args)
    out = args.output or tempfile.mkdtemp(prefix="x3dsearch-step-")
    settings = ExpandSettings(
        target_gflops=top, out=out, space=args.space, data=args.data, proxy_schedule=args.proxy_schedule,
        proxy_init=args.proxy_init, seed=args.seed, final_training=False, max_window=_check_max_window(args),
        **dispatch)
    try:
        spec = resolve(settings, space=space)
        if spec.proxy.lookahead and not args.quiet:
            print(f"note: {spec.proxy.recipe.name} looks one step ahead (lookahead: true); step takes the one step "
                  "only, so expand may still keep this step's runner-up instead of its choice", file=sys.stderr)
        step = run_step(spec, base, resume=args.resume, quiet=args.quiet or args.json)
    finally:
        if args.output is None:
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        print(json.dumps(step, indent=2))
        return 0
    trained = f", base trained {step['base_epochs']} epochs" if step["base_epochs"] else ""
    print(f"step from {X3DConfig.from_dict(step['base']).short} (proxy {step['schedule']}, init {step['init']}"
          f"{trained}, seed {step['seed']}):")
    for c in step["candidates"]:
        score = f"{c['top1']:.1%}" if c["top1"] is not None else c["status"]
        nll = f"  val NLL {-c['score']:.3f}" if c.get("score") is not None else ""
        mark = "  <- chosen" if c["axis"] == step["chosen"] else ""
        print(f"  {c['axis']:<11} {c['gflops']:8.4f} GFLOPs  top-1 {score:>7}{nll}{mark}")
    return 0


def search(args: argparse.Namespace) -> int:
    """Run (or plan) a search with the chosen strategy."""
    if args.strategy == "expand":
        _refuse_unused_options(args, recorded=False)
        return expand(args)
    from .optuna_search import optuna_plan, run_optuna
    from .rundir import RunDir

    if args.trials is None:
        raise UserError(f"--trials is required with --strategy {args.strategy}")
    if args.trials < 1:
        raise UserError("--trials must be at least 1")
    sampler = "random" if args.strategy == "random" else args.sampler or "tpe"
    settings = _settings_from_args(args, "random" if sampler == "random" else f"optuna-{sampler}")
    _refuse_unused_options(args, recorded=args.resume and RunDir(settings.out).exists())
    spec = _resolved(args, settings, expansion=False)
    if args.dry_run:
        print(optuna_plan(spec, args.trials, sampler))
        return 0
    _print_summary(args, run_optuna(spec, args.trials, sampler=sampler, resume=args.resume,
                                    quiet=args.quiet))
    return 0


def _refuse_unused_options(args: argparse.Namespace, recorded: bool) -> None:
    """A ``search`` option the chosen strategy would ignore is a mistake to say, not to drop silently; resuming a
    ``recorded`` run, its run.yaml decides on the expansion options (runs from before this check recorded them)."""
    from .search import LAND_WITHIN
    from .trial import Init

    unused = []
    if args.sampler is not None and args.strategy != "optuna":
        unused.append("--sampler")
    if args.trials is not None and args.strategy == "expand":
        unused.append("--trials (expand trains as many candidates as its steps need; --dry-run lists them)")
    if args.strategy != "expand" and not recorded:
        given = {"--proxy-init": args.proxy_init != Init.INHERIT.value,
                 "--final-init": args.final_init != Init.SCRATCH.value,
                 "--ceiling-gflops": args.ceiling_gflops is not None,
                 "--evaluate-contractions": args.evaluate_contractions,
                 "--land-within": args.land_within != LAND_WITHIN}
        unused += [flag for flag, on in given.items() if on]
    if unused:
        raise UserError(f"--strategy {args.strategy} does not use {', '.join(unused)}")


def compare(args: argparse.Namespace) -> int:
    """Print the comparison table and write its plot."""
    from .compare import compare_runs

    table, plot = compare_runs(args.runs, out=args.output, target_gflops=args.target_gflops,
                               tolerance=args.tolerance, target_ms=args.target_ms)
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.to_string(index=False))
        print(f"plot: {plot}", file=sys.stderr)
    return 0


def train(args: argparse.Namespace) -> int:
    """Train one config (resuming from its checkpoint) and print its test accuracy."""
    from pathlib import Path

    from .fit import fit
    from .workers import WorkerOptions
    from .schedule import load_schedule

    config = model_from_args(args)
    assert config is not None  # the parser requires a model
    schedule = load_schedule(args.schedule).recipe
    if args.epochs is not None:
        schedule = schedule.with_epochs(args.epochs)
    data = _data_root(args.data)
    config = _sized_for_data(config, data, from_preset=not args.config)
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    out = Path(args.output)
    try:  # a file or an unwritable place fails here, not after the training
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot use --output {out} as the training's folder: {err.strerror or err}") from None
    (_resuming_with_workers if args.workers > 1 else _resuming_alone)(args, out, schedule)
    workers = WorkerOptions(workers=args.workers, address=args.address, cpus_per_worker=args.cpus_per_worker,
                            gpus_per_worker=args.gpus_per_worker, storage=args.storage, max_failures=args.max_failures)
    result = fit(config, data, schedule, args.seed, out_dir=out, workers=workers, progress=True, test_split=True)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    if result.status != "ok":
        print(f"x3dsearch train: {result.status}: {result.reason}", file=sys.stderr)
        return 1
    if args.json:
        return 0
    workers = f", {result.world_size} workers x batch {schedule.batch_size}" if result.world_size > 1 else ""
    test = f", test top1 {result.test.top1:.1%}" if result.test else ", no test split"
    windows, crops = schedule.scored_views()
    pool = schedule.coarse_pool(config)
    first = "epoch" if schedule.coarse_epochs == 1 else f"{schedule.coarse_epochs} epochs"
    coarse = f" (the first {first} at {result.train_crop // pool}px)" if pool > 1 else ""
    print(f"{config.short}: val top1 {result.top1:.1%} top5 {result.top5:.1%}{test} ({windows}x{crops} views, "
          f"trained at {result.train_crop}px{coarse}, {result.clips_seen} clips{workers}, "
          f"{result.seconds:.0f}s{', stopped at the time budget' if result.stopped_early else ''}) -> {out}")
    return 0


_RESIZE_HINT = "set num_classes: {classes} in the config file, or train a preset (its classifier is sized to the data)"


def _sized_for_data(config: X3DConfig, data: "Path", from_preset: bool, hint: str = _RESIZE_HINT) -> X3DConfig:
    """A preset's classifier sized to the data's classes; a config file must already have as many (its head is its
    own)."""
    from .data import read_split

    classes = len(read_split(data, "train").class_names)
    if from_preset:
        return config.replace(num_classes=classes)
    if config.num_classes != classes:
        raise UserError(f"the config has {config.num_classes} classes and {data} has {classes}: "
                        + hint.format(classes=classes))
    return config


def _resuming_alone(args: argparse.Namespace, out: "Path", schedule: "Recipe") -> None:
    """Before ``train`` in this process (``--workers 1``): refuse worker options, say when it resumes."""
    from .train import CHECKPOINT

    given = [flag for flag, value in (("--address", args.address), ("--storage", args.storage),
                                      ("--cpus-per-worker", args.cpus_per_worker != 1.0),
                                      ("--gpus-per-worker", args.gpus_per_worker != 0.0)) if value]
    if given:
        raise UserError(f"{', '.join(given)} only apply with --workers 2 or more")
    if (out / CHECKPOINT).is_file() and not args.resume:
        print(f"x3dsearch train: resuming from {out / CHECKPOINT} (use a new --output to start over)",
              file=sys.stderr)


def _resuming_with_workers(args: argparse.Namespace, out: "Path", schedule: "Recipe") -> None:
    """Before ``train`` on ``--workers`` Ray Train workers: say when it resumes from the last checkpoint, and how
    it runs."""
    from .distributed import last_checkpoint, run_location

    storage, name = run_location(out, args.storage)
    if not args.resume and last_checkpoint(storage, name) is not None:
        print(f"x3dsearch train: resuming from the last checkpoint in {storage}/{name} (use a new --output to start "
              f"over)", file=sys.stderr)
    print(f"x3dsearch train: {args.workers} Ray Train workers x batch {schedule.batch_size} "
          f"({args.cpus_per_worker:g} CPUs, {args.gpus_per_worker:g} GPUs each) -> {out}", file=sys.stderr)


def evaluate(args: argparse.Namespace) -> int:
    """Score the model on the split; print the per-group (and per-class) table or JSON."""
    import torch

    from .scores import render_scores
    from .train import evaluate_weights

    config, weights, schedule, data, seed = _evaluated_model(args)
    root = _data_root(data)
    config = _sized_for_data(config, root, from_preset=args.run is None and args.preset is not None,
                             hint="a trained model scores only on data with as many classes as it was trained on")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{weights}: not a model file ({type(err).__name__})") from None
    try:
        scores = evaluate_weights(config, state, root, schedule, args.split, seed)
    except RuntimeError as err:  # load_state_dict: the weights belong to another config
        raise UserError(f"{weights} does not fit {config.short}: {str(err).splitlines()[0]}") from None
    if args.json:
        print(json.dumps({"config": config.to_dict(), "weights": str(weights), "schedule": schedule.name,
                          "data": str(root), **scores.to_dict()}, indent=2))
        return 0
    windows, crops = schedule.scored_views()
    print(f"{config.short} ({count_flops(config) / 1e9:.4g} GFLOPs) on {args.split} of {root}: "
          f"{windows}x{crops} views at {schedule.train_crop(config)} px, "
          f"top-1 {scores.top1:.1%}, top-5 {scores.top5:.1%}")
    print(render_scores([scores], args.per_class))
    return 0


def _evaluated_model(args: argparse.Namespace) -> tuple[X3DConfig, "Path", "Recipe", str | None, int]:
    """What ``evaluate`` scores: config, weights file, schedule, data (None: default) and seed."""
    from pathlib import Path

    from .rundir import RunDir
    from .proxy_policy import ProxyPolicy
    from .schedule import load_schedule

    if (args.run is None) == (args.weights is None):
        raise UserError("give a RUN_DIR or --weights FILE with --config FILE, not both")
    if args.run is not None:
        run = RunDir(args.run)
        if not run.exists():
            raise UserError(f"{args.run} is not a run directory (no run.yaml)")
        weights, settings = run.final_dir / "model.pt", run.settings()
        if not weights.is_file():
            raise UserError(f"{args.run} has no final model ({weights} is missing: its final training has not run)")
        schedule = (load_schedule(args.schedule) if args.schedule else ProxyPolicy.from_dict(settings["full"])).recipe
        return (X3DConfig.from_yaml(run.final_dir / "config.yaml"), weights, schedule,
                args.data or settings.get("data"), int(settings.get("seed") or 0))
    if args.config is None and args.preset is None:
        raise UserError("--weights needs the model's --config (or --preset)")
    weights = Path(args.weights)
    if not weights.is_file():
        raise UserError(f"model file not found: {weights}")
    return model_from_args(args), weights, load_schedule(args.schedule or "cpu_full").recipe, args.data, 0


def report(args: argparse.Namespace) -> int:
    """Print the report of one run."""
    from .report import render, run_report

    print(render(run_report(args.run, per_class=args.per_class), "json" if args.json else args.format), end="")
    return 0


def plot(args: argparse.Namespace) -> int:
    """Write the plot (or the final model's confusion matrix) and print its path."""
    from .plot import save_confusion, save_plot

    if args.split and not args.confusion:
        raise UserError("--split chooses the split of --confusion")
    if not args.confusion:
        print(save_plot(args.runs, args.output or "frontier.png", metric=args.metric))
        return 0
    if len(args.runs) != 1:
        raise UserError("--confusion plots one run's final model; give one RUN_DIR")
    print(save_confusion(args.runs[0], args.output or "confusion.png", split=args.split))
    return 0


def export(args: argparse.Namespace) -> int:
    """Write the chosen config in the chosen format (a preset or config with kinetics_full as its training); print
    what was written."""
    from .export import describe, export as write
    from .schedule import load_schedule

    model = model_from_args(args)
    if args.final and model is not None:
        raise UserError("--final chooses from a RUN_DIR, not a --preset or --config")
    recipe = load_schedule("kinetics_full").recipe.to_dict() if model is not None else None
    config, warnings, weights = write(args.format, args.output, run_dir=args.run, model=model, step=args.step,
                                      best_under_gflops=args.best_under_gflops, force=args.force, recipe=recipe)
    for warning in warnings:
        print(f"x3dsearch export: warning: {warning}", file=sys.stderr)
    print(f"{args.output}: {describe(config)} as {args.format}" + (f", weights in {weights}" if weights else ""))
    return 0


def latency(args: argparse.Namespace) -> int:
    """Print one timing, or time a sample and print the latency model's held-out error."""
    from . import latency as measured
    from .optuna_search import sample_configs
    from .space import load_space

    table = measured.LatencyTable()
    node = measured.RayNode(args.node, args.address) if args.node else None
    options = {"device": args.device, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
               "node": node}
    if args.sample is not None:
        if args.sample < 1 or not 0 < args.max_gflops < math.inf:  # NaN fails too
            raise UserError("--sample must be positive and --max-gflops a positive number")
        configs = sample_configs(load_space(args.space), args.sample, args.max_gflops)
        summary = measured.check_predictor(configs, table, **options)
        print(json.dumps(summary, indent=2) if args.json else measured.describe_check(summary))
        return 0
    config = model_from_args(args, default="XS")
    assert config is not None  # a default is given
    timing = measured.LatencyCost((table,), args.device, args.batch, args.threads, args.repeats, node).timing(
        config, fresh=args.fresh)
    print(json.dumps(timing.to_dict(), indent=2) if args.json
          else measured.describe(timing, f"{args.preset or args.config or 'XS'} {config.short}"))
    return 0


def make_data(args: argparse.Namespace) -> int:
    """Render the benchmark and print its folder."""
    from .data import make_synthetic

    out = make_synthetic(args.output, seed=args.seed, videos_per_class=args.videos_per_class, size=args.size,
                         val_per_class=args.val_per_class, test_per_class=args.test_per_class)
    print(out)
    return 0
