"""Where a CPU training step's time goes, per layer type: measured with torch.profiler.

For each shape (X2D, XS, M by default, or a config file) at a schedule's input size (``cpu_proxy`` by default:
its own frames, a quarter of its crop, 1x28, 4x40 and 16x56 px) and batch 16, on 1 and 2 threads, one training step
(forward, backward, SGD step) is profiled in each memory layout: PyTorch's default, channels-last
(``torch.channels_last_3d``), and channels-last with :mod:`x3dsearch.fastconv`'s channelwise
conv, first beside PyTorch's BatchNorm and activations, then with :mod:`x3dsearch.fastnorm`'s
fused ones. Every layer runs inside a ``record_function`` scope named for its type; backward work
is attributed to the type through the autograd sequence number its forward op recorded; the fused
kernel runs outside the modules and is found by its op name. Types: pointwise (1x1x1) conv,
channelwise conv (block 3x3x3 and stem 5x1x1), stem conv (1x3x3), BatchNorm, squeeze-excitation
(all of it), SiLU + ReLU, fused BatchNorm (+ activation, the squeeze-excitation's small layers and
the residual add, which it runs), head (conv5, pooling, lin5, classifier); "other" is the rest
(residual adds when unfused, loss, SGD step, gradient accumulation, running-statistics updates).
Freed memory stays in the heap (:func:`x3dsearch.heap.keep_freed_memory`), as in a CPU training.

    .venv/bin/python experiments/profile_step.py                    # ~1 minute on a quiet machine
    .venv/bin/python experiments/profile_step.py --shapes M --threads 1 --steps 3
    .venv/bin/python experiments/profile_step.py --shapes runs/demo/final/config.yaml --threads 1 \
        --variants "CL + fastconv" --schedule cpu_long_full        # a found model as its final training runs it
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from x3dsearch import preset
from x3dsearch.config import X3DConfig, preset_names
from x3dsearch.heap import keep_freed_memory
from x3dsearch.schedule import load_schedule

from bench_speed import training_step  # experiments/ is on sys.path when run as a script

TYPES = ["pointwise conv", "channelwise conv", "stem conv", "BatchNorm", "SE", "SiLU + ReLU",
         "fused BatchNorm (+ activation)", "head", "other"]
# name: (channels_last, fast, fused BatchNorm)
VARIANTS = {"default": (False, False, False), "channels-last": (True, False, False),
            "CL + fastconv, BN unfused": (True, True, False), "CL + fastconv": (True, True, True)}
_HEAD = {"conv5", "pool", "lin5", "lin5_relu", "dropout", "classifier"}
_SCOPE = "layer:"


def layer_type(name: str, module: nn.Module) -> str | None:
    """The layer type a module's whole forward counts as, or None to look at its children instead."""
    if name.split(".")[0] in _HEAD:
        return "head"
    if name.endswith(".se") and not isinstance(module, nn.Identity):
        return "SE"
    if isinstance(module, nn.Conv3d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "channelwise conv"
        return "pointwise conv" if module.kernel_size == (1, 1, 1) else "stem conv"
    if isinstance(module, nn.BatchNorm3d):
        return "BatchNorm"
    if isinstance(module, (nn.SiLU, nn.ReLU)):
        return "SiLU + ReLU"
    return None


def scope_layers(model: nn.Module) -> None:
    """Run every typed layer's forward inside a ``record_function("layer:<type>")`` scope."""
    typed: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in typed):
            continue
        kind = layer_type(name, module)
        if kind is None:
            continue
        typed.append(name)
        scopes: list[record_function] = []

        def enter(_module: nn.Module, _args: object, kind: str = kind, scopes: list = scopes) -> None:
            scopes.append(record_function(_SCOPE + kind))
            scopes[-1].__enter__()

        def leave(_module: nn.Module, _args: object, _out: object, scopes: list = scopes) -> None:
            scopes.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)


def times_by_type(events: list) -> dict[str, float]:
    """Milliseconds per layer type from profiler events (top-level events only, inclusive time)."""
    def root(event):  # noqa: ANN001, ANN202 - profiler event objects
        while event.cpu_parent is not None:
            event = event.cpu_parent
        return event

    kind_of_sequence: dict[int, str] = {}
    for event in events:
        top = root(event)
        if top.name.startswith(_SCOPE) and event.sequence_nr >= 0:
            kind_of_sequence[event.sequence_nr] = top.name[len(_SCOPE):]
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.cpu_parent is not None:
            continue
        if event.name.startswith(_SCOPE):
            kind = event.name[len(_SCOPE):]
        elif "x3dsearch_batchnorm_act" in event.name or "_FusedBatchNorm" in event.name:
            kind = "fused BatchNorm (+ activation)"  # runs outside the modules' scopes, forward and backward
        else:
            kind = kind_of_sequence.get(event.sequence_nr, "other") if event.sequence_nr >= 0 else "other"
        totals[kind] += event.cpu_time_total / 1e3
    return dict(totals)


def profile_variant(step: Callable[[], None], steps: int) -> tuple[dict[str, float], float]:
    """(ms per type, unprofiled ms) of one step, each averaged over ``steps`` steps after a warm-up."""
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    plain = (time.perf_counter() - start) * 1e3 / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return {k: v / steps for k, v in times_by_type(list(prof.events())).items()}, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["X2D", "XS", "M"],
                        help="preset names or model config files (a search's final/config.yaml)")
    parser.add_argument("--schedule", default="cpu_proxy", help="whose spatial_scale sets the input size")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1, help="profiled steps per measurement")
    args = parser.parse_args()
    schedule = load_schedule(args.schedule).recipe
    keep_freed_memory()  # as a CPU training does, so no step faults its pages in again
    print(f"torch {torch.__version__}; batch {args.batch}; ms per training step (forward + backward + SGD) "
          f"and its share, by layer type")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.shapes:
            config = preset(name) if name in preset_names() else X3DConfig.from_yaml(name)
            crop = schedule.train_crop(config)
            results = {variant: profile_variant(training_step(config, crop, args.batch, *VARIANTS[variant], prepare=scope_layers),
                                                args.steps) for variant in args.variants}
            print(f"\n### {name}, {config.frames}x{crop}x{crop}, {threads} thread{'s' * (threads > 1)}\n")
            print("| layer type | " + " | ".join(f"{v} ms | %" for v in args.variants) + " |")
            print("|---|" + "---:|---:|" * len(args.variants))
            for kind in TYPES:
                cells = []
                for variant in args.variants:
                    times = results[variant][0]
                    ms, total = times.get(kind, 0.0), sum(times.values())
                    cells.append(f"{ms:.1f} | {100 * ms / total:.1f}")
                print(f"| {kind} | " + " | ".join(cells) + " |")
            print("| **profiled step** | " + " | ".join(
                f"{sum(results[v][0].values()):.1f} | 100" for v in args.variants) + " |")
            print("| unprofiled step | " + " | ".join(f"{results[v][1]:.1f} | " for v in args.variants) + " |")


if __name__ == "__main__":
    main()
