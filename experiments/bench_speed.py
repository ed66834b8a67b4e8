"""Training-step speed on CPU: PyTorch's layers (default layout, channels-last) vs x3dsearch.fastconv.

For each shape (X2D, XS, M by default) at the CPU proxy's input size (its own frames, a quarter of
its crop: 1x28, 4x40 and 16x56 px) and batch 16, one table per thread count (1, then 2): clips/s
of a full training step (forward, backward, SGD step with momentum) of ``build_model(config)``
in PyTorch's default memory layout, in ``torch.channels_last_3d``, in channels-last with
:mod:`x3dsearch.fastconv`'s channelwise conv beside PyTorch's BatchNorm and activations, and with
:mod:`x3dsearch.fastnorm`'s fused ones as well (the default); and the achieved GMAC/s, counting a
training step as 3x the forward multiply-adds (``count_flops(config, crop=px)`` per clip). The practical ceiling
is a pointwise (1x1x1) conv measured in the same run: forward + backward (3x its MACs) of a
C -> C conv on the activation of the first stage's channelwise convs (C = its inner width), the
fastest of PyTorch's conv in either layout and :class:`x3dsearch.fastconv.PointwiseConv3d`'s matrix
product on the channels-last input (its path on Intel CPUs, forced here on any), so the model's own pointwise
path cannot beat its ceiling. Each shape has an fp32 row and a bf16 row (every variant's forward, and
the pointwise ceiling's, under CPU bf16 autocast; the fast channelwise kernel stays fp32 inside it),
the latter only where oneDNN has native bf16. All variants run side by side in one process,
interleaved, and each figure is the best of ``--repeats`` measurements (each the mean over enough
steps for ~0.5 s). As in ``train`` on CPU, the SGD step is PyTorch's fused one and freed memory stays
in the heap (:func:`x3dsearch.heap.keep_freed_memory`; ``X3DSEARCH_KEEP_MEMORY=0`` measures with glibc's
defaults, as rows before 2026-12-07 did, which also ran the unfused SGD).

    .venv/bin/python experiments/bench_speed.py                  # ~5 minutes
    .venv/bin/python experiments/bench_speed.py --shapes M --threads 1 --repeats 5
    .venv/bin/python experiments/bench_speed.py --shapes XS XS+fast XS+bottleneck --threads 1 --precisions fp32
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from x3dsearch import build_model, count_flops, fastconv, preset
from x3dsearch.config import X3DConfig, stage_layout
from x3dsearch.heap import keep_freed_memory
from x3dsearch.latency import device_name
from x3dsearch.schedule import load_schedule
from x3dsearch.space import expand

# name: (channels_last, fast, fused BatchNorm)
VARIANTS = {"PyTorch, default layout": (False, False, False), "PyTorch, channels-last": (True, False, False),
            "fastconv, BatchNorm unfused": (True, True, False),
            "fastconv, channels-last": (True, True, True),
            # as a user calls it: build_model + a standard-layout batch (the model lays it out itself)
            "fastconv, standard-layout input": (False, True, True)}
_TARGET_S = 0.5  # seconds of steps per measurement


def training_step(config: X3DConfig, crop: int, batch: int, channels_last: bool, fast: bool,
                  fused_norm: bool = True, prepare: Callable[[nn.Module], object] | None = None,
                  bf16: bool = False) -> Callable[[], None]:
    """A closure running one forward/backward/SGD step on a fixed random batch (``prepare`` sees the model),
    the forward under bf16 autocast when ``bf16``; ``fused_norm=False`` runs PyTorch's BatchNorm and
    activations beside the fast conv."""
    torch.manual_seed(0)
    model = build_model(config, fast=fast)
    if not fused_norm:
        for module in model.modules():
            if hasattr(module, "fast"):
                module.fast = False
    clips = torch.randn(batch, 3, config.frames, crop, crop)
    labels = torch.randint(0, config.num_classes, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    if prepare is not None:
        prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)  # as ``train`` on CPU

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


class MatmulPointwise(fastconv.PointwiseConv3d):
    """``PointwiseConv3d`` on its matrix-product path whatever the CPU."""
    matmul = True


class OneDNNPointwise(fastconv.PointwiseConv3d):
    """``PointwiseConv3d`` on its oneDNN path (folded under batch 16 on one thread) whatever the CPU."""
    matmul = False


def pointwise_step(config: X3DConfig, crop: int, batch: int, memory_format: torch.memory_format,
                   bf16: bool = False, conv_type: type[nn.Conv3d] = nn.Conv3d) -> tuple[Callable[[], None], int]:
    """(forward + backward closure, forward MACs) of a C -> C 1x1x1 ``conv_type`` on the first stage's
    activation, under bf16 autocast when ``bf16``."""
    channels = stage_layout(config)[0][2]
    side = ((crop - 1) // 2) // 2 + 1  # after the stem's and the first stage's stride 2
    conv = conv_type(channels, channels, 1, bias=False).to(memory_format=memory_format)
    x = torch.randn(batch, channels, config.frames, side, side).contiguous(memory_format=memory_format)
    x.requires_grad_()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = conv(x)
        out.float().sum().backward()
    return step, batch * config.frames * side * side * channels * channels


def seconds_per_call(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved_times(fns: dict[str, Callable[[], None]], repeats: int,
                      statistic: Callable[[list[float]], float] = min) -> dict[str, float]:
    """``statistic`` (best by default) over ``repeats`` seconds per call of each function, measured interleaved
    after a warm-up."""
    calls = {}
    for name, fn in fns.items():
        fn()
        calls[name] = max(1, round(_TARGET_S / seconds_per_call(fn, 1)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(seconds_per_call(fn, calls[name]))
    return {name: statistic(s) for name, s in samples.items()}


def cpu_name() -> str:
    """This machine's CPU model, as the latency table records it."""
    return device_name("cpu")


def config_of(shape: str) -> X3DConfig:
    """A preset, or a preset expanded along axes of the default space: ``XS+fast+width``."""
    name, *axes = shape.split("+")
    config = preset(name)
    for axis in axes:
        config = expand(config, axis)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["X2D", "XS", "M"],
                        help="presets, or presets expanded one full step per axis named: XS+fast")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="bf16: every variant's forward under CPU bf16 autocast (oneDNN bf16 convs)")
    args = parser.parse_args()
    if not fastconv.available():
        raise SystemExit("the fast conv did not compile on this machine; nothing to compare")
    if "bf16" in args.precisions and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("this CPU has no native bf16 for oneDNN: bf16 rows left out")
        args.precisions = [p for p in args.precisions if p != "bf16"]
    schedule = load_schedule("cpu_proxy").recipe
    heap = "freed memory kept (as train)" if keep_freed_memory() else "glibc's memory defaults"
    print(f"{cpu_name()}, torch {torch.__version__}, batch {args.batch}, best of {args.repeats}, {heap}; "
          "GMAC/s counts a training step as 3x forward MACs")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n### {threads} thread{'s' * (threads > 1)}\n")
        print("| shape | precision | input | GMAC/clip | " + " | ".join(f"{v}: clips/s (GMAC/s)" for v in VARIANTS)
              + " | fastconv vs default | fastconv vs channels-last | pointwise conv GMAC/s |")
        print("|---|---|---|---:|" + "---:|" * (len(VARIANTS) + 3))
        for name in args.shapes:
            config = config_of(name)
            crop = schedule.train_crop(config)
            macs = count_flops(config, crop=crop)
            for precision in args.precisions:
                bf16 = precision == "bf16"
                fns = {v: training_step(config, crop, args.batch, *VARIANTS[v], bf16=bf16) for v in VARIANTS}
                pointwise = {str(fmt): pointwise_step(config, crop, args.batch, fmt, bf16=bf16)
                             for fmt in (torch.contiguous_format, torch.channels_last_3d)}
                pointwise["matrix product"] = pointwise_step(config, crop, args.batch, torch.channels_last_3d,
                                                             bf16=bf16, conv_type=MatmulPointwise)
                fns.update({fmt: step for fmt, (step, _) in pointwise.items()})
                seconds = interleaved_times(fns, args.repeats)
                clips = {v: args.batch / seconds[v] for v in VARIANTS}
                rate = {v: 3 * macs * clips[v] / 1e9 for v in VARIANTS}
                ceiling = max(3 * pw_macs / seconds[fmt] / 1e9 for fmt, (_, pw_macs) in pointwise.items())
                cells = " | ".join(f"{clips[v]:.1f} ({rate[v]:.1f})" for v in VARIANTS)
                default, channels_last, _, fast, _ = (clips[v] for v in VARIANTS)
                print(f"| {name} | {precision} | {config.frames}x{crop}x{crop} | {macs / 1e9:.4f} | {cells} | "
                      f"{fast / default:.2f}x | {fast / channels_last:.2f}x | {ceiling:.1f} |", flush=True)

if __name__ == "__main__":
    main()
