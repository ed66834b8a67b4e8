"""The ``x3dsearch`` command line: it parses the arguments and calls the subcommand's handler in
:mod:`x3dsearch.commands`; a user's mistake is printed as a one-line error.

Each subcommand has an ``_add_<name>`` function that declares its arguments and names its handler;
options that several subcommands share are declared once, in the ``_add_*`` helpers below, so every
option string is written in one place only.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any, Callable, Literal, Sequence

from . import __version__, commands
from .config import preset_names
from .errors import UserError
from .schedule import DEFAULT_FULL, DEFAULT_PROXY
from .search import LAND_WITHIN
from .trial import Init

__all__ = ["main", "build_parser"]

_Handler = Callable[[argparse.Namespace], int]
_Target = Any  # an ArgumentParser or an argument group: anything with add_argument


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose to the terminal width but prints indented lines (examples) exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line if line.startswith(" ") or not line.strip()
                         else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         for line in text.splitlines())


# -- options shared by several subcommands (each option string is declared here once) ----------


def _command(sub: Any, name: str, handler: _Handler, summary: str, description: str | None = None,
             epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in the command list, ``description`` (default: the summary) atop its --help."""
    parser = sub.add_parser(name, help=summary, description=description or summary, epilog=epilog,
                            formatter_class=_HelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def _add_json(target: _Target, help: str = "print machine-readable JSON") -> None:
    """``--json``: machine-readable output on stdout."""
    target.add_argument("--json", action="store_true", help=help)


def _seed(text: str) -> int:
    """A seed from 0 to 2**32 - 1 (numpy's legacy seeding range; the trainings reduce seeds to it anyway)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be from 0 to {2 ** 32 - 1}, got {value}")
    return value


def _add_seed(target: _Target, help: str) -> None:
    """``--seed`` (default 0)."""
    target.add_argument("--seed", type=_seed, default=0, help=f"{help} (default: %(default)s)")


def _add_data(target: _Target) -> None:
    """``--data``: the dataset folder a training reads."""
    target.add_argument("--data", metavar="DIR",
                        help="Kinetics-layout folder (train.csv, val.csv, optionally test.csv, classes.txt, "
                             "groups.json, augment.json); "
                             "default: the synthetic benchmark, generated on first use")


def _add_max_window(target: _Target) -> None:
    """``--max-window SECONDS``: the longest clip window a search may offer."""
    target.add_argument("--max-window", type=float, metavar="SECONDS",
                        help="no candidate's window (frames x stride at 30 fps) may be longer than this; "
                             "default: the shortest video the data lists (probed at the start; give this to skip "
                             "probing a large dataset)")


def _add_schedule(target: _Target, flag: str, default: str | None, role: str,
                  kind: Literal["proxy", "full"] | None = None, default_help: str = "%(default)s") -> None:
    """A schedule option taking a shipped name (those of ``kind``: proxy, full or any) or a YAML file."""
    from .schedule import schedule_names

    target.add_argument(flag, default=default, metavar="NAME|FILE",
                        help=f"schedule of {role}: {', '.join(schedule_names(kind))} or a YAML file "
                             f"(default: {default_help})")


def _add_model(p: argparse.ArgumentParser, role: str, required: bool = False) -> argparse._MutuallyExclusiveGroup:
    """``--preset NAME | --config FILE``: the one way every command names a model; returns their group."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--preset", metavar="NAME", help=f"{role}: a named preset, {', '.join(preset_names())}")
    group.add_argument("--config", metavar="FILE", help=f"{role}: an X3D config YAML (e.g. an exported model)")
    return group


def _add_output(p: argparse.ArgumentParser, help: str, metavar: str = "FILE", default: str | None = None,
                required: bool = False) -> argparse._MutuallyExclusiveGroup:
    """``-o/--output``: what every command writes, a file or a run directory; ``--out`` stays a hidden alias."""
    if default is not None:
        help += " (default: %(default)s)"
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("-o", "--output", metavar=metavar, default=default, help=help)
    group.add_argument("--out", dest="output", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return group


def _add_resume(target: _Target, help: str) -> None:
    """``--resume``: continue the run in ``--output``."""
    target.add_argument("--resume", action="store_true", help=help)


def _add_target(target: _Target, help: str, required: bool = False) -> None:
    """``--target-gflops G``: a compute budget."""
    target.add_argument("--target-gflops", type=float, required=required, metavar="G", help=help)


def _add_target_ms(target: _Target, help: str) -> None:
    """``--target-ms MS``: a latency budget."""
    target.add_argument("--target-ms", type=float, metavar="MS", help=help)


def _add_timing(target: _Target, prefix: str = "") -> None:
    """``--device``, ``--batch``, ``--threads`` (``prefix`` e.g. ``latency-``): how a latency is measured."""
    target.add_argument(f"--{prefix}device", choices=("cpu", "cuda"), default="cpu",
                        help="where latency is measured (default: %(default)s)")
    target.add_argument(f"--{prefix}batch", type=int, default=1, metavar="N",
                        help="clips per timed pass (default: %(default)s)")
    target.add_argument(f"--{prefix}threads", type=int, default=1, metavar="N",
                        help="intra-op threads of the timed passes (default: %(default)s)")
    target.add_argument(f"--{prefix}node", metavar="RESOURCE",
                        help="time on the Ray cluster node that offers this custom resource (the deployment device; "
                             "start it with ray start --address HEAD --num-cpus=0 --num-gpus=0 "
                             "--resources='{\"RESOURCE\": 1}', so that no trial runs there) instead of on this "
                             "machine; needs --address")


def _add_format(target: _Target, choices: Sequence[str], help: str, default: str | None = None,
                metavar: str | None = None) -> None:
    """``--format``: one of ``choices`` (required when there is no default; ``metavar`` may list fewer)."""
    target.add_argument("--format", choices=choices, default=default, required=default is None, metavar=metavar,
                        help=help)


def _add_split(target: _Target, help: str, default: str | None = None) -> None:
    """``--split val|test``: the split a model is scored on."""
    target.add_argument("--split", choices=("val", "test"), default=default, help=help)


def _add_per_class(target: _Target, help: str) -> None:
    """``--per-class``: a row for every class, not only per class group."""
    target.add_argument("--per-class", action="store_true", help=help)


def _add_runs(target: _Target, help: str) -> None:
    """One or more RUN_DIR positionals."""
    target.add_argument("runs", nargs="+", metavar="RUN_DIR", help=help)


# -- search options: shared by expand and search ------------------------------------------------


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What a search is: target (FLOPs or latency), run directory, data, space, schedules, seed."""
    budget = p.add_mutually_exclusive_group(required=True)
    _add_target(budget, help="the budget in GFLOPs (conv+linear MACs per clip): expand stops once a model costs "
                             "at least G; optuna and random keep every trained model at or under G")
    _add_target_ms(budget, "the budget as measured inference latency in ms per clip instead (BatchNorm folded, as "
                           "'x3dsearch latency' times it, on this machine or on --latency-node; --latency-*): each "
                           "network is timed once and kept in RUN_DIR/latency.csv and the cache's latency.csv")
    _add_output(p, "run directory (default: runs/<strategy>-<target>g-seed<seed>, or <target>ms)", metavar="RUN_DIR")
    _add_resume(p, "continue the run in --output (or start it there if it is new): finished trials are read "
                   "from its journal, not re-run")
    _add_data(p)
    _add_space(p)
    _add_max_window(p)
    _add_schedule(p, "--proxy-schedule", DEFAULT_PROXY, "the short candidate trainings", kind="proxy")
    _add_schedule(p, "--full-schedule", DEFAULT_FULL, "the final training", kind="full")
    p.add_argument("--full-workers", type=int, default=1, metavar="N",
                   help="run the final training on N Ray Train workers (DDP), each reserving --cpus-per-worker "
                        "CPUs and --gpus-per-worker GPUs; the full schedule's batch_size is per worker "
                        "(see 'x3dsearch train --workers') (default: %(default)s, this process alone)")
    p.add_argument("--no-final-training", dest="final_training", action="store_false",
                   help="stop after the search and contraction")
    _add_seed(p, "seed of every training")
    _add_timing(p.add_argument_group("latency (with --target-ms)"), "latency-")


def _add_expansion_options(p: argparse.ArgumentParser, shown: bool) -> None:
    """What only progressive expansion uses: weight inheritance, the ceiling, landing and contraction.

    ``search`` takes them too, for ``--strategy expand``, but does not list them (``shown`` False).
    """
    def hidden(text: str) -> str:
        return text if shown else argparse.SUPPRESS

    group = p.add_argument_group("expansion") if shown else p
    _add_proxy_init(group, hidden, final=", and so does the final training with --final-init inherit")
    group.add_argument("--final-init", choices=(Init.INHERIT, Init.SCRATCH), default=Init.SCRATCH.value,
                       help=hidden("where the final training starts: scratch, from a fresh initialisation (the "
                                   "default since 2026-12-06, measured with the 16-epoch cpu_long_full); inherit, "
                                   "from the chosen model's proxy weights (with --proxy-init inherit; the default "
                                   "before) (default: %(default)s)"))
    group.add_argument("--ceiling-gflops", type=float, metavar="G",
                       help=hidden("skip candidates above G GFLOPs without training (default: 2x the target)"))
    group.add_argument("--evaluate-contractions", action="store_true",
                       help=hidden("contract every axis that can reach the target and proxy-train them all, "
                                   "instead of contracting only the last-expanded axis"))
    group.add_argument("--land-within", type=float, default=LAND_WITHIN, metavar="R",
                       help=hidden("once a model is within R times under the target, land on it with a partial "
                                   "step of the last step's axis (or of every axis, proxy-trained, with "
                                   "--evaluate-contractions) instead of a full proxy-trained step past it that "
                                   "the contraction mostly undoes; 1 takes the full step, as the paper did "
                                   "(default: %(default).3g, half a doubling)"))


def _add_space(target: _Target) -> None:
    """``--space``: the search space whose axes are expanded."""
    target.add_argument("--space", default="x3d_kinetics", metavar="NAME|FILE",
                        help="search space: a shipped name or a YAML file (default: %(default)s)")


def _add_quiet(target: _Target) -> None:
    """``--quiet``: no live view."""
    target.add_argument("--quiet", action="store_true", help="no live view (errors only)")


def _add_proxy_init(target: _Target, shown: Callable[[str], str] = str, final: str = "") -> None:
    """``--proxy-init inherit|scratch``: where a candidate's proxy training starts (help passed through ``shown``;
    ``final`` says what the final training does, where there is one)."""
    target.add_argument("--proxy-init", choices=(Init.INHERIT, Init.SCRATCH), default=Init.INHERIT.value,
                        help=shown("inherit: every candidate starts from its parent's proxy-trained weights, "
                                   f"widened or deepened function-preservingly (the start trains first){final}; "
                                   "scratch: every training starts from a fresh initialisation, as in the X3D "
                                   "paper (default: %(default)s)"))


def _add_address(target: _Target) -> None:
    """``--address HOST:PORT``: the Ray cluster to join."""
    target.add_argument("--address", metavar="HOST:PORT",
                        help="an existing Ray cluster (or ray://HOST:PORT; also RAY_ADDRESS); "
                             "default: start a local Ray on this machine")


def _add_storage(target: _Target, help: str) -> None:
    """``--storage PATH``: where Ray keeps a run's results and checkpoints."""
    target.add_argument("--storage", metavar="PATH", help=help)


def _add_max_failures(target: _Target, help: str) -> None:
    """``--max-failures N`` (default 2): how often Ray retries after a worker or node died."""
    target.add_argument("--max-failures", type=int, default=2, metavar="N", help=f"{help} (default: %(default)s)")


def _add_dispatch_options(p: argparse.ArgumentParser) -> None:
    """Where and how the proxy trainings run (Ray)."""
    group = p.add_argument_group("Ray dispatch")
    _add_address(group)
    _add_storage(group, "Ray Tune storage (must be shared by all nodes on a cluster; default: RUN_DIR/ray)")
    _add_worker_resources(group, "CPUs each Ray worker (a proxy trial, or a worker of the final training) "
                                 "reserves; it trains with that many threads",
                          "GPUs each Ray worker reserves", aliases=True)
    group.add_argument("--max-concurrent", type=int, metavar="N",
                       help="at most N trials at once (default: as many as the CPUs/GPUs fit)")
    _add_max_failures(group, "retries of a trial whose worker or node died")


def _add_worker_resources(target: _Target, cpus: str, gpus: str, aliases: bool = False) -> None:
    """``--cpus-per-worker`` and ``--gpus-per-worker``; ``aliases`` keeps ``--cpus/gpus-per-trial`` as hidden spellings."""
    for kind, default, help in (("cpus", 1.0, cpus), ("gpus", 0.0, gpus)):
        flags = [f"--{kind}-per-worker", *([f"--{kind}-per-trial"] if aliases else [])]
        target.add_argument(flags[0], type=float, default=default, metavar="N", help=f"{help} (default: %(default)s)")
        for alias in flags[1:]:
            target.add_argument(alias, dest=f"{kind}_per_worker", type=float, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """What a search prints."""
    group = p.add_argument_group("output")
    group.add_argument("--dry-run", action="store_true",
                       help="read every input (data folder, search space, schedules, run directory), say "
                            "what was found, print the plan and candidate costs; train nothing")
    _add_quiet(group)
    _add_json(group, "print a JSON summary on stdout at the end")


def _add_search_options(p: argparse.ArgumentParser, expansion_shown: bool) -> None:
    """Every option a search takes (``expand`` and ``search``); expansion's own listed only where asked."""
    _add_run_options(p)
    _add_expansion_options(p, expansion_shown)
    _add_dispatch_options(p)
    _add_output_options(p)


# -- subcommands: each _add_<name> names its handler in commands.py --------------------------------


def _add_flops(sub: Any) -> None:
    """``flops``: a preset or a config file, and --json."""
    p = _command(sub, "flops", commands.flops, "cost of a preset or config: GFLOPs, params, per-stage breakdown",
                 "Closed-form multiply-adds (conv + linear, 1 MAC = 1 FLOP) and parameters of one clip at the "
                 "config's own frames and crop.")
    _add_model(p, "the model (default: preset X2D)")
    _add_json(p)


def _add_presets(sub: Any) -> None:
    """``presets``: only --json."""
    p = _command(sub, "presets", commands.presets, "table of the X3D presets (X2D, XS, S, M, L, XL)",
                 "The X3D presets of the paper: input (frames x stride, crop), the width, bottleneck and "
                 "depth factors, and their GFLOPs and parameters.")
    _add_json(p)


def _add_expand(sub: Any) -> None:
    """``expand``: the shared search options."""
    p = _command(
        sub, "expand", commands.expand, "progressive expansion from X2D to a FLOP target (the X3D search)",
        "Forward expansion: from the search space's start (X2D), expand each axis by one step, train every "
        "candidate briefly (proxy schedule, as Ray Tune trials), keep the most accurate, repeat until the cost "
        "reaches the target. Backward contraction then shrinks the last step onto the target, and the chosen "
        "model is trained with the full schedule.",
        "examples:\n"
        "  x3dsearch expand --target-gflops 6                  # synthetic data, local Ray, CPU\n"
        "  x3dsearch expand --target-gflops 6 --dry-run        # planned steps and costs only\n"
        "  x3dsearch expand --target-gflops 6 -o runs/a --resume   # continue after Ctrl-C\n"
        "  x3dsearch expand --target-gflops 6 --full-schedule cpu_full --final-init inherit\n"
        "                                # a shorter final training (README: the fast pair)\n"
        "  x3dsearch expand --target-ms 40                     # a latency budget, timed on this machine\n"
        "  x3dsearch expand --target-gflops 2 --data /data/kinetics400 --address head:6379 \\\n"
        "      --proxy-schedule kinetics_proxy --full-schedule kinetics_full --gpus-per-worker 1 \\\n"
        "      --storage /shared/runs\n"
        "The run directory (--output) holds run.yaml, journal.jsonl (every trial), path.json and final/.")
    _add_search_options(p, expansion_shown=True)


def _add_step(sub: Any) -> None:
    """``step``: the base config, the proxy options, dispatch, --json."""
    p = _command(
        sub, "step", commands.step, "one expansion step from a model: each axis' proxy score and the choice",
        "Where would the search go from my model? Takes one forward-expansion step from the model exactly as "
        "'expand' takes a step (same proxy schedule and mechanisms, except a schedule's one-step look ahead, "
        "which needs the next step): with --proxy-init inherit the base is "
        "first trained from scratch for as many proxy epochs as a search from the space's start would have "
        "given it by then (the start's epochs plus one step's per cost doubling), and every candidate "
        "inherits its weights. Prints each candidate's cost and proxy top-1, and the axis the search would "
        "choose. No candidate is skipped for its cost.",
        "examples:\n"
        "  x3dsearch step --preset XS\n"
        "  x3dsearch step --config found.yaml --seed 1 --json\n"
        "JSON: {\"base\": {config}, \"candidates\": [{\"axis\", \"gflops\", \"top1\", ...}], \"chosen\": AXIS}")
    model = _add_model(p, "the base model", required=True)
    model.add_argument("--from", dest="base", help=argparse.SUPPRESS)  # the old spelling: a preset name or a file
    _add_data(p)
    _add_space(p)
    _add_max_window(p)
    _add_schedule(p, "--proxy-schedule", DEFAULT_PROXY, "the short candidate trainings", kind="proxy")
    _add_proxy_init(p)
    _add_seed(p, "seed of every training")
    _add_output(p, "run directory of the step (default: a temporary folder, removed afterwards)",
                metavar="RUN_DIR")
    _add_resume(p, "continue the step in --output: finished trials are read from its journal")
    _add_dispatch_options(p)
    _add_quiet(p)
    _add_json(p, "print the step as one JSON object on stdout")


def _add_search(sub: Any) -> None:
    """``search``: strategy, trials and sampler, then the shared search options."""
    p = _command(
        sub, "search", commands.search,
        "search with a chosen strategy: optuna (TPE / NSGA-II under a FLOP budget) or expand",
        "--strategy optuna: Optuna samples frames, stride, crop, width, bottleneck and depth within the search "
        "space's 'bounds:' and maximises proxy top-1 at cost <= the target (tpe), or trades top-1 against "
        "GFLOPs under the target (nsga2). Proposals above the target are rejected by the cost model before any "
        "training and do not count toward --trials. Feasible proposals run as Ray Tune trials, --max-concurrent "
        "(default: as many as fit) at a time, and are journaled like expand's, so report/plot/export/compare "
        "read the run directory. --strategy expand runs 'x3dsearch expand' and takes its expansion options "
        "(--proxy-init, --final-init, --ceiling-gflops, --evaluate-contractions, --land-within; see 'x3dsearch "
        "expand --help'), which the sampling strategies refuse.",
        "examples:\n"
        "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 30\n"
        "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 30 --sampler nsga2 -o runs/n\n"
        "  x3dsearch search --strategy optuna --target-gflops 0.3 --trials 40 -o runs/n --resume\n"
        "The study is stored in RUN_DIR/optuna.db (resumed by --resume; each trial keeps its config as the "
        "user attribute 'config'). Browse it with:\n"
        "  pip install optuna-dashboard && optuna-dashboard sqlite:///RUN_DIR/optuna.db")
    p.add_argument("--strategy", choices=("optuna", "random", "expand"), default="optuna",
                   help="search strategy: optuna (--sampler), random (uniform in the bounds, Optuna's "
                        "RandomSampler: the standard NAS baseline), or expand (default: %(default)s)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="optuna: number of proxy trainings (rejected over-budget proposals not counted); "
                        "with --resume, the total to reach")
    p.add_argument("--sampler", choices=("tpe", "nsga2"),
                   help="optuna: tpe maximises top-1 under the target; nsga2 searches the top-1/GFLOPs "
                        "front under it (default: tpe)")
    _add_search_options(p, expansion_shown=False)


def _add_compare(sub: Any) -> None:
    """``compare``: run directories, target, tolerance, plot file."""
    p = _command(
        sub, "compare", commands.compare,
        "compare search runs at equal proxy compute: anytime curves, frontiers, a table",
        "For each run directory: best proxy top-1 under the target against cumulative proxy compute (each trial's "
        "measured CPU-seconds when every run recorded them, else its seconds x cpus_per_trial: the table's clock "
        "column says which), the best under the target at the smallest budget all runs reached, and the "
        "top-1/GFLOPs frontier of everything trained. Runs searched under latency compare in measured ms per clip "
        "(each run's latency.csv), with the GFLOPs frontier beside.")
    _add_runs(p, "run directories (expand or optuna)")
    _add_output(p, "plot file", default="compare.png")
    _add_target(p, "FLOP budget to compare under (default: the runs' common target)")
    _add_target_ms(p, "latency budget (ms per clip) to compare runs searched under latency, each trial costed by "
                      "its run's measured latency (default for such runs: their common --target-ms)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="relative slack over the target, as contraction lands near it (default: %(default)s)")
    _add_json(p, "print the table as JSON")


def _add_train(sub: Any) -> None:
    """``train``: model, data, schedule, epochs, seed, run directory; workers and where they run."""
    p = _command(
        sub, "train", commands.train, "train one model with a schedule (final training); resumable",
        "Train a preset or config with a schedule, checkpointing RUN_DIR/checkpoint.pt every epoch, then test with "
        "the schedule's K temporal x S spatial views. Writes metrics.json, model.pt and config.yaml in --output. Run "
        "the same command again after a kill to continue from the last checkpoint (it resumes automatically and "
        "says so; --resume only makes it explicit); the result equals an uninterrupted run's. With --workers N "
        "the training runs on N Ray Train workers (DDP: gloo on CPU, nccl on GPU): the schedule's batch_size is "
        "per worker, the learning rate scales with the global batch N x batch_size, precise BN and the test run "
        "once on rank 0; checkpoints go to --storage through Ray Train, a dead worker is replaced from the last "
        "checkpoint and a rerun after a kill continues from it.",
        "examples:\n"
        "  x3dsearch train --config found.yaml -o runs/final\n"
        "  x3dsearch train --preset XS -o runs/xs --workers 2          # two local workers\n"
        "  x3dsearch train --config found.yaml --data /data/kinetics400 --schedule k400_64.yaml \\\n"
        "      --workers 16 --gpus-per-worker 1 --address head:6379 --storage /shared/final -o /shared/final\n"
        "k400_64.yaml: kinetics_full with batch_size: 64 (per worker), so that 16 workers step with its 1024 clips.")
    _add_model(p, "the model to train", required=True)
    _add_data(p)
    _add_schedule(p, "--schedule", "cpu_full", "the training")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="override the schedule's epochs (a coarse start scales with them)")
    _add_seed(p, "seed of the training")
    _add_output(p, "output folder (checkpoint and results)", metavar="RUN_DIR", required=True)
    _add_resume(p, "continue from the last checkpoint (the default when there is one; this only silences "
                   "the notice)")
    _add_json(p, "print the result (status, top-1, top-5, clips, seconds, ...) as JSON on stdout")
    group = p.add_argument_group("distributed training (Ray Train)")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help="train on N Ray Train workers (DDP); 1: this process alone (default: %(default)s)")
    _add_address(group)
    _add_worker_resources(group, "CPUs each worker reserves; it trains with that many threads",
                          "GPUs each worker reserves; > 0 trains on GPU with nccl")
    _add_storage(group, "where Ray Train keeps the checkpoints (must be shared by all nodes on a cluster; "
                        "default: --output)")
    _add_max_failures(group, "restarts from the last checkpoint after a worker or node died")


def _add_evaluate(sub: Any) -> None:
    """``evaluate``: a run or a model file with its config, the split, data, per-class rows, --json."""
    p = _command(
        sub, "evaluate", commands.evaluate, "score a run's final model or a model file on val or test, per group and class",
        "Top-1 and top-5 of a trained model over one split, per class group (as the data's groups.json declares "
        "them) and, with --per-class, per class: scored as its training scored it (the schedule's views and "
        "input size). RUN_DIR: the run's final model (final/model.pt and final/config.yaml) with the run's full "
        "schedule, data and seed. --weights with --config (or --preset): a model file (e.g. written by 'train "
        "--output') with --schedule.",
        "examples:\n"
        "  x3dsearch evaluate runs/demo --split test\n"
        "  x3dsearch evaluate --weights runs/found/model.pt --config runs/found/config.yaml --per-class --json")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a run directory whose final training finished")
    p.add_argument("--weights", metavar="FILE", help="a model file (a state dict, e.g. model.pt); with --config")
    _add_model(p, "the model of --weights")
    _add_schedule(p, "--schedule", None, "the scoring (views, input size)", kind="full",
                  default_help="the run's full schedule; cpu_full with --weights")
    _add_split(p, "the split to score (default: %(default)s)", default="val")
    _add_data(p)
    _add_per_class(p, "a row for every class, under its group")
    _add_json(p)


def _add_report(sub: Any) -> None:
    """``report``: a run directory and the output format."""
    p = _command(
        sub, "report", commands.report, "tables of a run: path, frontier, failures, compute totals",
        "The expansion path (axis, shape, GFLOPs, params, proxy top-1 and, where the data declares class groups, "
        "its validation top-1 per group: what the proxy could see; trial time), the top-1/GFLOPs frontier "
        "of every trained config, failed/retried/skipped trials with their reasons, the final model's top-1 per "
        "class group on val and test (the held-out number where the data has a test split), and the CPU/GPU-hours "
        "spent (journal seconds x the run's cpus/gpus per trial; final/metrics.json for the final training).")
    p.add_argument("run", metavar="RUN_DIR", help="a run directory")
    fmt = p.add_mutually_exclusive_group()
    _add_format(fmt, ("table", "csv", "markdown", "json"), default="table",
                metavar="{table,csv,markdown}",  # 'json' stays accepted: the old spelling of --json
                help="default: %(default)s (csv: one table with a 'section' column)")
    _add_json(fmt, "print the report as JSON")
    _add_per_class(p, "the final model's top-1 for every class too, not only per class group")


def _add_plot(sub: Any) -> None:
    """``plot``: run directories, image file, cost axis."""
    p = _command(
        sub, "plot", commands.plot, "accuracy/cost plot of runs: candidates, frontier, expansion path, presets",
        "Proxy top-1 of every trained candidate against GFLOPs (log scale), coloured by the axis that produced "
        "it; the frontier as a step line; the expansion path as arrows labelled with the chosen axis; the "
        "contraction and the final model's full-training accuracy (star); the presets' costs for reference.")
    _add_runs(p, "one or more run directories (overlaid); with --confusion one run directory, or the --output "
                 "folder of 'x3dsearch train'")
    _add_output(p, "image file; .png, .svg or .pdf (default: frontier.png, with --confusion confusion.png)",
                required=False)
    p.add_argument("--metric", choices=("gflops", "params", "ms"),
                   help="cost axis; ms: measured latency, with a GFLOPs panel beside it (default: ms for runs "
                        "searched under --target-ms, else gflops)")
    group = p.add_argument_group("the final model's confusion matrix")
    group.add_argument("--confusion", action="store_true",
                       help="plot the final model's confusion matrix instead: rows are true classes in percent of "
                            "their videos, grouped as the data declares, with each class's top-1")
    _add_split(group, "the split of --confusion (default: test where the final training scored one, else val)")


def _add_export(sub: Any) -> None:
    """``export``: which config (run step, budget, final or preset), format and file."""
    p = _command(
        sub, "export", commands.export,
        "write a found config (or a preset) for x3dsearch, PySlowFast or pytorchvideo",
        "x3dsearch: our config YAML (plus RUN_DIR/final/model.pt beside it as FILE.pt for the final model). "
        "pyslowfast: a MODEL.ARCH x3d config with the run's full schedule as SOLVER. pytorchvideo: JSON keyword "
        "arguments of pytorchvideo.models.x3d.create_x3d. A config the target cannot build exactly (stage "
        "blocks other than 1/2/5/3, PySlowFast's fixed SE ratio 1/16, a stem width not a multiple of 4) is "
        "refused unless --force.",
        "examples:\n"
        "  x3dsearch export runs/demo --format x3dsearch -o found.yaml     # final model + found.pt\n"
        "  x3dsearch export runs/demo --step 3 --format pyslowfast -o X3D_step3.yaml\n"
        "  x3dsearch export runs/demo --best-under-gflops 2 --format pytorchvideo -o x3d.json\n"
        "  x3dsearch export --preset M --format pyslowfast -o X3D_M.yaml")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a run directory (not with --preset or --config)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--step", type=int, metavar="N", help="the config chosen at path step N")
    choice.add_argument("--best-under-gflops", type=float, metavar="G",
                        help="the most accurate trained config at or under G GFLOPs")
    choice.add_argument("--final", action="store_true", help="the final (contracted) model (default)")
    _add_model(p, "export this model instead of a run's config")
    _add_format(p, ("x3dsearch", "pyslowfast", "pytorchvideo"), help="the file's dialect (see above)")
    _add_output(p, "file to write", required=True)
    p.add_argument("--force", action="store_true",
                   help="write the nearest expressible config when the target cannot build this one exactly")


def _add_latency(sub: Any) -> None:
    """``latency``: one model's measured latency, or a sample of the space's box and the predictor's error."""
    p = _command(
        sub, "latency", commands.latency, "measured inference latency of a preset or config, on this machine or a Ray node",
        "Times the network as it is deployed (BatchNorm folded, channels-last with the fast kernels, "
        "inference_mode): warm-up passes, then the median of the repeats, per clip, with the range over them. "
        "Each timing is kept per (config, device model, batch, threads) in latency.csv in the cache folder "
        "($X3DSEARCH_CACHE, default ~/.cache/x3dsearch) and reused; --fresh times it again. --sample N times N "
        "random configs of the space's bounds and reports how well a latency model fitted on the table "
        "predicts configs it was not fitted on.",
        epilog="examples:\n  x3dsearch latency --preset XS\n  x3dsearch latency --config found.yaml --threads 2 --json\n"
               "  x3dsearch latency --sample 40 --max-gflops 6\n"
               "  x3dsearch latency --preset S --node jetson --address HEAD:6379   # on the cluster's 'jetson' node")
    source = _add_model(p, "the model (default: preset XS)")
    source.add_argument("--sample", type=int, metavar="N",
                        help="time N random configs of the space's bounds, then fit and check the latency model")
    p.add_argument("--max-gflops", type=float, default=6.0, metavar="G",
                   help="with --sample: only configs up to this cost (default: %(default)s)")
    _add_space(p)
    _add_timing(p)
    _add_address(p)
    p.add_argument("--repeats", type=int, default=10, metavar="N", help="timed passes (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="time again even if the table has this config")
    _add_json(p)


def _add_make_data(sub: Any) -> None:
    """``make-data``: output folder, seed, size."""
    p = _command(
        sub, "make-data", commands.make_data, "write the synthetic video benchmark (Kinetics layout, H.264 videos)",
        "Render the synthetic benchmark: 12 classes in 3 groups that need spatial detail, frame rate or long "
        "clips to tell apart (design in the generated README.md), as H.264 MP4 with train.csv, val.csv, "
        "test.csv (held out: each split has its own seeds), classes.txt, groups.json and augment.json (no "
        "mirrored training clips: a mirror image swaps the diagonal textures). The same seed renders the "
        "same frames, but the H.264 encode is lossy and not "
        "bit-reproducible: two generations give different files and different decoded pixels, so runs on "
        "freshly generated copies differ by that compression noise.",
        "examples:\n  x3dsearch make-data -o data/synthetic --videos-per-class 16\n"
        "  x3dsearch make-data -o bench --val-per-class 30     # the default benchmark (used when no --data)")
    output = _add_output(p, "folder to create (must not exist or be empty)", metavar="DIR", required=True)
    output.add_argument("output", nargs="?", metavar="OUT_DIR", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the old positional spelling
    _add_seed(p, "seed of the rendered videos")
    p.add_argument("--videos-per-class", type=int, default=32, metavar="N",
                   help="train videos per class (default: %(default)s)")
    p.add_argument("--val-per-class", type=int, metavar="N", help="val videos per class (default: N*10/32)")
    p.add_argument("--test-per-class", type=int, metavar="N",
                   help="test videos per class; 0 writes no test split (default: as many as val)")
    p.add_argument("--size", choices=("small", "medium"), default="small",
                   help="small: 64x64 px, medium: 128x128 px; 30 fps, 4 s (default: %(default)s)")


_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_flops, _add_presets, _add_expand, _add_step, _add_search, _add_compare, _add_train, _add_evaluate,
    _add_report, _add_plot, _add_export, _add_latency, _add_make_data)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="x3dsearch", formatter_class=_HelpFormatter,
        description="Find the best X3D video network for a compute budget by progressive expansion "
                    "(Feichtenhofer, CVPR 2020).",
        epilog="Run 'x3dsearch COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
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
