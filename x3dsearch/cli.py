"""The ``x3dsearch`` command line: one subcommand per job, user mistakes as one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from .config import X3DConfig, preset, preset_names
from .cost import cost_breakdown, count_flops, count_params
from .errors import UserError

if TYPE_CHECKING:
    from .runner import ExpandSettings

__all__ = ["main"]

_Handler = Callable[[argparse.Namespace], int]


def _config_from_args(args: argparse.Namespace) -> X3DConfig:
    if getattr(args, "config", None):
        return X3DConfig.from_yaml(args.config)
    return preset(args.preset or "X2D")


def _cmd_flops(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
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


def _cmd_presets(args: argparse.Namespace) -> int:
    rows = []
    for name in preset_names():
        c = preset(name)
        rows.append({"preset": name, "frames_x_stride": f"{c.frames}x{c.stride}", "crop": c.crop,
                     "width": c.width, "bottleneck": c.bottleneck, "depth": c.depth,
                     "gflops": round(count_flops(c) / 1e9, 4), "params": count_params(c)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'preset':<7}{'frames x stride':>16}{'crop':>6}{'γw':>6}{'γb':>6}{'γd':>6}{'GFLOPs':>10}{'params':>12}")
    for r in rows:
        print(f"{r['preset']:<7}{r['frames_x_stride']:>16}{r['crop']:>6}{r['width']:>6g}{r['bottleneck']:>6g}"
              f"{r['depth']:>6g}{r['gflops']:>10.3f}{r['params']:>12,}")
    return 0


def _settings_from_args(args: argparse.Namespace, strategy: str) -> "ExpandSettings":
    """The run settings shared by every search strategy, from the common flags."""
    from .runner import ExpandSettings

    if args.target_gflops <= 0:
        raise UserError("--target-gflops must be positive")
    for flag in ("cpus_per_trial", "max_concurrent", "max_failures"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "max_failures" else 1e-9):
            raise UserError(f"--{flag.replace('_', '-')} must be positive")
    out = args.out or f"runs/{strategy}-{args.target_gflops:g}g-seed{args.seed}"
    return ExpandSettings(
        target_gflops=args.target_gflops, out=out, space=args.space, data=args.data,
        proxy_schedule=args.proxy_schedule, full_schedule=args.full_schedule, seed=args.seed,
        ceiling_gflops=args.ceiling_gflops, evaluate_contractions=args.evaluate_contractions,
        final_training=args.final_training, address=args.address, storage=args.storage,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures)


def _print_summary(args: argparse.Namespace, summary: dict) -> None:
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2))
    elif not args.quiet:
        print(summary["table"])


def _cmd_expand(args: argparse.Namespace) -> int:
    from .runner import plan_text, run_expand
    from .space import load_space

    settings = _settings_from_args(args, "expand")
    if args.dry_run:
        print(plan_text(settings, load_space(args.space)))
        return 0
    _print_summary(args, run_expand(settings, resume=args.resume, quiet=args.quiet))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    if args.strategy == "expand":
        return _cmd_expand(args)
    from .optuna_search import optuna_plan, run_optuna
    from .space import load_space

    if args.trials is None:
        raise UserError("--trials is required with --strategy optuna")
    settings = _settings_from_args(args, f"optuna-{args.sampler}")
    if args.dry_run:
        print(optuna_plan(settings, load_space(args.space), args.trials, args.sampler))
        return 0
    _print_summary(args, run_optuna(settings, args.trials, sampler=args.sampler, resume=args.resume,
                                    quiet=args.quiet))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_runs

    table, plot = compare_runs(args.runs, out=args.output, target_gflops=args.target_gflops,
                               tolerance=args.tolerance)
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.to_string(index=False))
        print(f"plot: {plot}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .schedule import load_schedule
    from .train import CHECKPOINT, train

    config = X3DConfig.from_yaml(args.config)
    schedule = load_schedule(args.schedule)
    if args.epochs is not None:
        schedule = schedule.replace(epochs=args.epochs)
    if args.data is None:
        from .data import default_dataset

        data = Path(default_dataset())
    else:
        data = Path(args.data)
        if not data.exists():
            raise UserError(f"data folder not found: {data}")
    out = Path(args.out)
    if (out / CHECKPOINT).is_file() and not args.resume:
        print(f"x3dsearch train: resuming from {out / CHECKPOINT} (use a new --out to start over)",
              file=sys.stderr)
    result = train(config, data, schedule, seed=args.seed, out_dir=out, resume=True, progress=True)
    if result.status != "ok":
        print(f"x3dsearch train: {result.status}: {result.reason}", file=sys.stderr)
        return 1
    print(f"{config.short}: top1 {result.top1:.1%} top5 {result.top5:.1%} ({schedule.eval_views[0]}x"
          f"{schedule.eval_views[1]} views, trained at {result.train_crop}px, {result.clips_seen} clips, "
          f"{result.seconds:.0f}s{', stopped at the time budget' if result.stopped_early else ''}) -> {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import render, run_report

    print(render(run_report(args.run), args.format), end="")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import save_plot

    print(save_plot(args.runs, args.output, metric=args.metric))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import describe, export

    if args.final and args.preset:
        raise UserError("--final chooses from a RUN_DIR, not a --preset")
    config, warnings, weights = export(args.format, args.output, run_dir=args.run, preset_name=args.preset,
                                       step=args.step, best_under_gflops=args.best_under_gflops,
                                       force=args.force)
    for warning in warnings:
        print(f"x3dsearch export: warning: {warning}", file=sys.stderr)
    print(f"{args.output}: {describe(config)} as {args.format}" + (f", weights in {weights}" if weights else ""))
    return 0


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help=f"a named preset: {', '.join(preset_names())} (default X2D)")
    group.add_argument("--config", metavar="FILE", help="an X3D config YAML (e.g. an exported model)")


def _add_search_args(p: argparse.ArgumentParser) -> None:
    """The flags every search strategy shares (target, run directory, data, schedules, Ray, output)."""
    p.add_argument("--target-gflops", type=float, required=True, metavar="G",
                   help="the budget in GFLOPs (conv+linear MACs per clip): expand stops once a model costs "
                        "at least G; optuna keeps every trained model at or under G")
    p.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory (default: runs/<strategy>-<target>g-seed<seed>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: finished trials are read from its journal, not re-run")
    p.add_argument("--data", metavar="DIR",
                   help="Kinetics-layout folder (train.csv, val.csv); default: the synthetic benchmark, "
                        "generated on first use")
    p.add_argument("--space", default="x3d_kinetics", metavar="NAME|FILE",
                   help="search space: a shipped name or a YAML file (default: %(default)s)")
    p.add_argument("--proxy-schedule", default="cpu_proxy", metavar="NAME|FILE",
                   help="schedule of the short candidate trainings (default: %(default)s)")
    p.add_argument("--full-schedule", default="cpu_full", metavar="NAME|FILE",
                   help="schedule of the final training (default: %(default)s)")
    p.add_argument("--no-final-training", dest="final_training", action="store_false",
                   help="stop after the search and contraction")
    p.add_argument("--seed", type=int, default=0, help="seed of every training (default: %(default)s)")
    p.add_argument("--ceiling-gflops", type=float, metavar="G",
                   help="skip candidates above G GFLOPs without training (default: 2x the target)")
    p.add_argument("--evaluate-contractions", action="store_true",
                   help="contract every axis that can reach the target and proxy-train them all, "
                        "instead of contracting only the last-expanded axis")
    ray_group = p.add_argument_group("Ray dispatch")
    ray_group.add_argument("--address", metavar="HOST:PORT",
                           help="an existing Ray cluster (or ray://HOST:PORT; also RAY_ADDRESS); "
                                "default: start a local Ray on this machine")
    ray_group.add_argument("--storage", metavar="PATH",
                           help="Ray Tune storage (must be shared by all nodes on a cluster; default: RUN_DIR/ray)")
    ray_group.add_argument("--cpus-per-trial", type=float, default=1.0, help="default: %(default)s")
    ray_group.add_argument("--gpus-per-trial", type=float, default=0.0, help="default: %(default)s")
    ray_group.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    ray_group.add_argument("--max-failures", type=int, default=2,
                           help="retries of a trial whose worker or node died (default: %(default)s)")
    out_group = p.add_argument_group("output")
    out_group.add_argument("--dry-run", action="store_true", help="print the plan and candidate costs; train nothing")
    out_group.add_argument("--quiet", action="store_true", help="no live view (errors only)")
    out_group.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .data import make_synthetic

    out = make_synthetic(args.out_dir, seed=args.seed, videos_per_class=args.videos_per_class, size=args.size)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="x3dsearch",
        description="Find the best X3D video network for a compute budget by progressive expansion "
                    "(Feichtenhofer, CVPR 2020).",
        epilog="Run 'x3dsearch COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("flops", help="cost of a preset or config: GFLOPs, params, per-stage breakdown",
                       description="Closed-form multiply-adds (conv + linear, 1 MAC = 1 FLOP) and parameters "
                                   "of one clip at the config's own frames and crop.")
    _add_model_source(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_flops)

    p = sub.add_parser("presets", help="table of the X3D presets (X2D, XS, S, M, L, XL)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_presets)

    p = sub.add_parser(
        "expand", help="progressive expansion from X2D to a FLOP target (the X3D search)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Forward expansion: from the search space's start (X2D), expand each axis by one step, "
                    "train every candidate briefly (proxy schedule, as Ray Tune trials), keep the most "
                    "accurate, repeat until the cost reaches the target. Backward contraction then shrinks "
                    "the last step onto the target, and the chosen model is trained with the full schedule.",
        epilog="examples:\n"
               "  x3dsearch expand --target-gflops 6                  # synthetic data, local Ray, CPU\n"
               "  x3dsearch expand --target-gflops 6 --dry-run        # planned steps and costs only\n"
               "  x3dsearch expand --target-gflops 6 --out runs/a --resume   # continue after Ctrl-C\n"
               "  x3dsearch expand --target-gflops 2 --data /data/kinetics400 --address head:6379 \\\n"
               "      --proxy-schedule kinetics_proxy --full-schedule kinetics_full --gpus-per-trial 1 \\\n"
               "      --storage /shared/runs\n"
               "The run directory (--out) holds run.yaml, journal.jsonl (every trial), path.json and final/.")
    _add_search_args(p)
    p.set_defaults(handler=_cmd_expand)

    p = sub.add_parser(
        "search", help="search with a chosen strategy: optuna (TPE / NSGA-II under a FLOP budget) or expand",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="--strategy optuna: Optuna samples frames, stride, crop, width, bottleneck and depth within "
                    "the search space's 'bounds:' and maximises proxy top-1 at cost <= the target (tpe), or "
                    "trades top-1 against GFLOPs under the target (nsga2). Proposals above the target are "
                    "rejected by the cost model before any training and do not count toward --trials. Feasible "
                    "proposals run as Ray Tune trials, --max-concurrent (default: as many as fit) at a time, "
                    "and are journaled like expand's, so report/plot/export/compare read the run directory. "
                    "--strategy expand runs 'x3dsearch expand'.",
        epilog="examples:\n"
               "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 30\n"
               "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 30 --sampler nsga2 --out runs/n\n"
               "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 40 --out runs/n --resume\n"
               "The study is stored in RUN_DIR/optuna.db (resumed by --resume; each trial keeps its config as\n"
               "the user attribute 'config'). Browse it with:\n"
               "  pip install optuna-dashboard && optuna-dashboard sqlite:///RUN_DIR/optuna.db")
    p.add_argument("--strategy", choices=("optuna", "expand"), default="optuna",
                   help="search strategy (default: %(default)s)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="optuna: number of proxy trainings (rejected over-budget proposals not counted); "
                        "with --resume, the total to reach")
    p.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe",
                   help="optuna: tpe maximises top-1 under the target; nsga2 searches the top-1/GFLOPs "
                        "front under it (default: %(default)s)")
    _add_search_args(p)
    p.set_defaults(handler=_cmd_search)

    p = sub.add_parser(
        "compare", help="compare search runs at equal proxy compute: anytime curves, frontiers, a table",
        description="For each run directory: best proxy top-1 under the target against cumulative proxy "
                    "compute (journal seconds x cpus_per_trial), the best under the target at the smallest "
                    "budget all runs reached, and the top-1/GFLOPs frontier of everything trained.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (expand or optuna)")
    p.add_argument("-o", "--output", default="compare.png", metavar="FILE",
                   help="plot file (default: %(default)s)")
    p.add_argument("--target-gflops", type=float, metavar="G",
                   help="budget to compare under (default: the runs' common target)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="relative slack over the target, as contraction lands near it (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(handler=_cmd_compare)

    p = sub.add_parser(
        "train", help="train one config with a schedule (final training); resumable",
        description="Train a config with a schedule, checkpointing RUN_DIR/checkpoint.pt every epoch, then "
                    "test with the schedule's K temporal x S spatial views. Writes metrics.json, model.pt and "
                    "config.yaml in --out. Run the same command again after a kill to continue from the last "
                    "checkpoint (it resumes automatically and says so; --resume only makes it explicit); the "
                    "result equals an uninterrupted run's.")
    p.add_argument("--config", required=True, metavar="FILE", help="an X3D config YAML (e.g. found.yaml)")
    p.add_argument("--data", metavar="DIR", help="Kinetics-layout folder (default: the synthetic benchmark)")
    p.add_argument("--schedule", default="cpu_full", metavar="NAME|FILE",
                   help="a shipped schedule (cpu_proxy, cpu_full, kinetics_proxy, kinetics_full) or a YAML "
                        "file (default: %(default)s)")
    p.add_argument("--epochs", type=int, metavar="N", help="override the schedule's epochs")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder (checkpoint and results)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt (the default when "
                                                         "it exists; this only silences the notice)")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("report", help="tables of a run: path, frontier, failures, compute totals",
                       description="The expansion path (axis, shape, GFLOPs, params, proxy top-1, trial time), "
                                   "the top-1/GFLOPs frontier of every trained config, failed/retried/skipped "
                                   "trials with their reasons, and the CPU/GPU-hours spent (journal seconds x "
                                   "the run's cpus/gpus per trial; final/metrics.json for the final training).")
    p.add_argument("run", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--format", choices=("table", "csv", "markdown", "json"), default="table",
                   help="default: %(default)s (csv: one table with a 'section' column)")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("plot", help="accuracy/cost plot of runs: candidates, frontier, expansion path, presets",
                       description="Proxy top-1 of every trained candidate against GFLOPs (log scale), coloured "
                                   "by the axis that produced it; the frontier as a step line; the expansion "
                                   "path as arrows labelled with the chosen axis; the contraction and the final "
                                   "model's full-training accuracy (star); the presets' costs for reference.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="one or more run directories (overlaid)")
    p.add_argument("-o", "--output", default="frontier.png", metavar="FILE",
                   help="image file; .png, .svg or .pdf (default: %(default)s)")
    p.add_argument("--metric", choices=("gflops", "params"), default="gflops",
                   help="cost axis (default: %(default)s)")
    p.set_defaults(handler=_cmd_plot)

    p = sub.add_parser(
        "export", help="write a found config (or a preset) for x3dsearch, PySlowFast or pytorchvideo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="x3dsearch: our config YAML (plus RUN_DIR/final/model.pt beside it as FILE.pt for the final "
                    "model). pyslowfast: a MODEL.ARCH x3d config with the run's full schedule as SOLVER. "
                    "pytorchvideo: JSON keyword arguments of pytorchvideo.models.x3d.create_x3d. A config the "
                    "target cannot build exactly (stage blocks other than 1/2/5/3, PySlowFast's fixed SE ratio "
                    "1/16, a stem width not a multiple of 4) is refused unless --force.",
        epilog="examples:\n"
               "  x3dsearch export runs/demo --format x3dsearch -o found.yaml     # final model + found.pt\n"
               "  x3dsearch export runs/demo --step 3 --format pyslowfast -o X3D_step3.yaml\n"
               "  x3dsearch export runs/demo --best-under-gflops 2 --format pytorchvideo -o x3d.json\n"
               "  x3dsearch export --preset M --format pyslowfast -o X3D_M.yaml")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a run directory (not with --preset)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--step", type=int, metavar="N", help="the config chosen at path step N")
    choice.add_argument("--best-under-gflops", type=float, metavar="G",
                        help="the most accurate trained config at or under G GFLOPs")
    choice.add_argument("--final", action="store_true", help="the final (contracted) model (default)")
    p.add_argument("--preset", metavar="NAME", help="export a preset instead of a run's config")
    p.add_argument("--format", choices=("x3dsearch", "pyslowfast", "pytorchvideo"), required=True)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--force", action="store_true",
                   help="write the nearest expressible config when the target cannot build this one exactly")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser(
        "make-data", help="write the synthetic video benchmark (Kinetics layout, H.264 videos)",
        description="Render the synthetic benchmark: 12 classes in 3 groups that need spatial detail, frame "
                    "rate or long clips to tell apart (design in the generated README.md), as H.264 MP4 with "
                    "train.csv, val.csv and classes.txt. The same seed gives the same videos.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--videos-per-class", type=int, default=32, metavar="N",
                   help="train videos per class; val gets N*10/32 (default: %(default)s)")
    p.add_argument("--size", choices=("small", "medium"), default="small",
                   help="small: 64x64 px, medium: 128x128 px; 30 fps, 4 s (default: %(default)s)")
    p.set_defaults(handler=_cmd_make_data)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``x3dsearch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: _Handler = args.handler
    try:
        return handler(args)
    except UserError as err:
        print(f"x3dsearch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"x3dsearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
