"""Where the fused BatchNorm + activation pays: fused kernel against PyTorch's modules by batch size.

For each of the three fused patterns in an X3D block (BatchNorm + ReLU; BatchNorm + squeeze-excitation
gate + SiLU; BatchNorm + residual add + ReLU), channel counts of X3D's stages and batches of 16 clips
from a few frames of 5 px to 16 frames of 28 px, it times one forward and backward of
:func:`x3dsearch.fastnorm.batchnorm_act` with the kernel forced on and with the modules, interleaved,
best of ``--repeats``. The fused path has a fixed per-call cost (Python, autograd, small per-channel
ops), so it loses on small batches; ``fastnorm._MIN_ELEMENTS`` is set from where the ratio crosses 1.

    .venv/bin/python experiments/bench_fastnorm.py --threads 1       # ~3 minutes
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn

from x3dsearch import fastconv, fastnorm
from x3dsearch.model import _SqueezeExcite

from bench_speed import interleaved_times, cpu_name  # experiments/ is on sys.path when run as a script

_PATTERNS = ("relu", "se_silu", "residual_relu")
# per-clip (frames, side): from the CPU proxy's late stages up to X3D-M's res2 at the proxy's 56 px input
_SIZES = [(4, 5), (4, 10), (4, 20), (16, 7), (16, 14), (16, 28)]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, nargs="+", default=[24, 54, 108, 216])
    args = parser.parse_args()
    if not fastconv.available():
        raise SystemExit("the fast kernels did not compile on this machine: nothing to compare")
    torch.set_num_threads(args.threads)
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
