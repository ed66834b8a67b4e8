"""Where the fused BatchNorm + activation pays: fused kernel against PyTorch's modules by batch size.

For each of the three fused patterns in an X3D block (BatchNorm + ReLU; BatchNorm + squeeze-excitation
gate + SiLU; BatchNorm + residual add + ReLU), channel counts of X3D's stages and batches of 16 clips
from a few frames of 5 px to 16 frames of 28 px, it times one forward and backward of
:func:`x3dsearch.fastnorm.batchnorm_act` with the kernel forced on and with the modules, interleaved,
best of ``--repeats``. The fused path has a fixed per-call cost (Python, autograd, small per-channel
ops), so it loses on small batches; ``fastnorm._MIN_ELEMENTS`` is set from where the ratio crosses 1.

With ``--passes`` it times each of the kernel's four passes instead (statistics, output, the backward's sums and
input gradient) with ReLU and with SiLU, at the layer shapes of a found 6-GFLOP model's final training, as GB/s:
the bytes of the tensors each pass reads and writes over its time, beside a tensor copy's in the same process.
A pass near the copy's rate is bound by memory; one well under it, by its arithmetic.

    .venv/bin/python experiments/bench_fastnorm.py --threads 1       # ~3 minutes
    .venv/bin/python experiments/bench_fastnorm.py --threads 1 --passes
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn

from x3dsearch import fastconv, fastnorm
from x3dsearch.heap import keep_freed_memory
from x3dsearch.model import _SqueezeExcite

from bench_speed import interleaved_times, cpu_name  # experiments/ is on sys.path when run as a script

_PATTERNS = ("relu", "se_silu", "residual_relu")
# per-clip (frames, side): from the CPU proxy's late stages up to X3D-M's res2 at the proxy's 56 px input
_SIZES = [(4, 5), (4, 10), (4, 20), (16, 7), (16, 14), (16, 28)]
# (channels, frames, side) of the BatchNorms in res2-res4 of the demo's found model (16x3 320px w1 b2.27 d4.84) at
# cpu_long_full's 80 px input: the stem's, each stage's first inner width before its stride, its inner and outer widths
_PASS_SHAPES = [(12, 16, 40), (54, 16, 40), (54, 16, 20), (24, 16, 20), (109, 16, 10), (48, 16, 10), (218, 16, 5),
                (96, 16, 5)]


def _pass_of(pattern: str, x: torch.Tensor, fused: bool) -> Callable[[], None]:
    """One forward + backward of ``pattern`` on ``x`` through the kernel (``fused``) or the modules."""
    channels = x.shape[1]
    norm = nn.BatchNorm3d(channels)
    act = nn.SiLU() if pattern == "se_silu" else nn.ReLU()
    se = _SqueezeExcite(channels, 0.0625) if pattern == "se_silu" else None
    residual = torch.randn_like(x).requires_grad_() if pattern == "residual_relu" else None
    grad = torch.randn_like(x)

    if fused and not fastnorm._applies(x, norm, act, True, se, residual):
        raise SystemExit(f"the fused kernel does not take {pattern} at {tuple(x.shape)}: nothing to compare")

    def run() -> None:
        fastnorm.batchnorm_act(x, norm, act, fused, se=se, residual=residual).backward(grad)
    return run


def _pass_rates(x: torch.Tensor, repeats: int) -> dict[str, float]:
    """GB/s of each fused-kernel pass on ``x`` with ReLU and SiLU, and of ``copy_``, interleaved, best of
    ``repeats``: tensor bytes read and written per pass (ReLU's backward reads y besides dy and x)."""
    ops, channels = fastnorm._ops(), x.shape[1]
    mean, var, _ = ops.stats(x)
    scale, bias, grad, out = torch.rsqrt(var + 1e-5), torch.zeros(channels), torch.randn_like(x), torch.empty_like(x)
    kx, k0 = torch.zeros(channels), torch.zeros(x.shape[0], channels)
    passes: dict[str, tuple[Callable[[], object], int]] = {"copy": (lambda: out.copy_(x), 2),
                                                            "stats": (lambda: ops.stats(x), 1)}
    for activation, name in ((fastnorm._RELU, "relu"), (fastnorm._SILU, "silu")):
        y = ops.apply(x, mean, scale, bias, activation, None, None) if activation == fastnorm._RELU else None
        reads = 3 if y is not None else 2
        passes[f"apply {name}"] = (lambda a=activation: ops.apply(x, mean, scale, bias, a, None, None), 2)
        passes[f"grad_sums {name}"] = (lambda a=activation, y=y: ops.grad_sums(grad, x, y, mean, scale, bias, a,
                                                                                None), reads)
        passes[f"grad_input {name}"] = (lambda a=activation, y=y: ops.grad_input(grad, x, y, mean, scale, bias, a,
                                                                                  None, kx, k0, False), reads + 1)
    times = interleaved_times({name: fn for name, (fn, _) in passes.items()}, repeats)
    return {name: tensors * x.numel() * 4 / times[name] / 1e9 for name, (_, tensors) in passes.items()}


def main_passes(args: argparse.Namespace) -> None:
    """The ``--passes`` table."""
    keep_freed_memory()  # as a training does: no pass pays for faulting in fresh output pages
    print(f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, batch {args.batch}; GB/s of "
          f"tensor traffic per pass, best of {args.repeats}\n")
    rows = []
    for channels, frames, side in _PASS_SHAPES:
        torch.manual_seed(0)
        x = torch.randn(args.batch, channels, frames, side, side).contiguous(memory_format=torch.channels_last_3d)
        rates = _pass_rates(x, args.repeats)
        if not rows:
            print("| channels | frames x side | MB | " + " | ".join(rates) + " |")
            print("|---:|---:|---:|" + "---:|" * len(rates))
        rows.append(rates)
        print(f"| {channels} | {frames}x{side}² | {x.numel() * 4 / 1e6:.0f} | "
              + " | ".join(f"{v:.1f}" for v in rates.values()) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, nargs="+", default=[24, 54, 108, 216])
    parser.add_argument("--passes", action="store_true", help="GB/s of each kernel pass instead (module docstring)")
    args = parser.parse_args()
    if not fastconv.available():
        raise SystemExit("the fast kernels did not compile on this machine: nothing to compare")
    torch.set_num_threads(args.threads)
    if args.passes:
        main_passes(args)
        return
    gate, fastnorm._MIN_ELEMENTS = fastnorm._MIN_ELEMENTS, 0  # time the kernel below today's gate too
    print(f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, batch {args.batch}; "
          f"the fused path runs from {gate:,} elements\n")
    print("| pattern | channels | frames x side | elements | modules ms | fused ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pattern in _PATTERNS:
        for channels in args.channels:
            for frames, side in _SIZES:
                torch.manual_seed(0)
                x = torch.randn(args.batch, channels, frames, side, side).contiguous(
                    memory_format=torch.channels_last_3d).requires_grad_()
                times = interleaved_times({"modules": _pass_of(pattern, x, False),
                                           "fused": _pass_of(pattern, x, True)}, args.repeats)
                print(f"| {pattern} | {channels} | {frames}x{side}² | {x.numel():,} | {times['modules'] * 1e3:.3f} "
                      f"| {times['fused'] * 1e3:.3f} | {times['modules'] / times['fused']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
