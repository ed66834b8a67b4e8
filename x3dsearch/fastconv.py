"""A fast channelwise (depthwise) 3-D convolution for CPU training in channels-last memory.

PyTorch's CPU kernels for ``nn.Conv3d(C, C, k, groups=C)`` reach a fraction of the speed of
its pointwise convs, so X3D's 3x3x3 channelwise convs take most of a CPU training step while
being a small share of its FLOPs. ``csrc/channelwise3d.cpp`` computes the forward pass and both
gradients directly on (N, T, H, W, C)-ordered memory, vectorised over channels and parallel over
the batch; it is compiled once per machine and checkout on first use, in one extension with
:mod:`x3dsearch.fastnorm`'s fused BatchNorm (cached by ``torch.utils.cpp_extension`` under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).

Public API: :class:`ChannelwiseConv3d`, a drop-in ``nn.Conv3d`` subclass (same parameters and
state dict) that takes the fast path whenever it applies; :func:`channelwise_conv3d`, the
functional form; :class:`PointwiseConv3d`, a drop-in ``nn.Conv3d`` for unstrided 1x1x1 convs that
keeps them off PyTorch's slow native conv at every batch size (a matrix product on Intel CPUs, oneDNN's
conv elsewhere; no compiled code); :func:`enabled`, the switch (``X3DSEARCH_FAST_CONV=0`` turns it off); and
:func:`available`, whether the kernels compiled. If compilation fails PyTorch's conv and BatchNorm
run, after one warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from .switches import switched_on

__all__ = ["ChannelwiseConv3d", "PointwiseConv3d", "channelwise_conv3d", "enabled", "available", "ENV_VAR"]

ENV_VAR = "X3DSEARCH_FAST_CONV"
_SOURCES = [Path(__file__).with_name("csrc") / name for name in ("channelwise3d.cpp", "batchnorm_act.cpp")]
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
# PyTorch (ATen's Convolution.cpp, use_mkldnn) runs an unstrided 1x1x1 float32 conv on one thread with its
# native slow_conv3d when the batch is under 16: 2-3x slower per clip than oneDNN's kernel, and its output
# is not channels-last, so the fused BatchNorm after it falls back too (experiments/bench_batch.py).
_ONEDNN_MIN_BATCH = 16


def enabled(fast: bool | None = None) -> bool:
    """Whether to use the fast conv: ``fast`` if given, else ``$X3DSEARCH_FAST_CONV`` (default on)."""
    if fast is not None:
        return bool(fast)
    return switched_on(ENV_VAR)


def available() -> bool:
    """Whether the compiled kernels load on this machine (compiles them on the first call)."""
    return _kernels() is not None


def _build_tag() -> str:
    """Short hash of the CPU model and features (a ``-march=native`` build must not move between CPUs) and of
    where the sources are: each checkout keeps its own build, so two never rebuild over each other's."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    ident = [next((line for line in lines if line.startswith(key)), "") for key in ("model name", "flags")]
    text = "\n".join([platform.machine(), platform.processor(), *ident, str(_SOURCES[0].parent.resolve())])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@functools.cache
def _library() -> Any:
    """``torch.ops`` with this package's compiled kernels loaded (built on first use); None after one warning.

    One extension holds the channelwise conv and :mod:`x3dsearch.fastnorm`'s fused BatchNorm.
    """
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        with contextlib.suppress(ImportError):
            import ninja  # the pip package's binary is off PATH when the venv is not activated
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    try:
        cpp_extension.load(name=f"x3dsearch_kernels_{_build_tag()}", sources=[str(s) for s in _SOURCES],
                           extra_cflags=_CFLAGS, extra_ldflags=["-fopenmp"], is_python_module=False)
        return torch.ops
    except Exception as error:  # any build or load failure means: run PyTorch's ops
        warnings.warn(f"x3dsearch: could not build the fast CPU kernels (channelwise conv, BatchNorm + "
                      f"activation), using PyTorch's ({type(error).__name__}: {error})", RuntimeWarning,
                      stacklevel=2)
        return None


def _kernels() -> Any:
    """The compiled channelwise-conv ops (``torch.ops.x3dsearch_channelwise3d``), or None."""
    library = _library()
    return None if library is None else library.x3dsearch_channelwise3d


class _ChannelwiseConv3dFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled forward, input-gradient and weight-gradient kernels."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, stride: int,
                padding: tuple[int, int, int]) -> torch.Tensor:
        kernels = _kernels()
        x = x.contiguous(memory_format=torch.channels_last_3d)
        weight = weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return kernels.forward(x, weight, stride, list(padding))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kernels = _kernels()
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        padding = list(ctx.padding)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.backward_input(grad, weight, list(x.shape), ctx.stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = kernels.backward_weight(grad, x, list(weight.shape[2:]), ctx.stride, padding)
        return grad_x, grad_w, None, None


def _traced() -> bool:
    """Whether the code runs under ``torch.jit`` tracing or scripting or ``torch.compile``."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _fast_path_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Float32 5-D CPU tensors, outside tracing, scripting and compiling, with built kernels."""
    return (x.dim() == 5 and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and not _traced() and _kernels() is not None)


def channelwise_conv3d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1,
                       padding: tuple[int, int, int] = (1, 1, 1)) -> torch.Tensor:
    """``F.conv3d(x, weight, stride=(1, stride, stride), padding=padding, groups=C)``, fast when it can be.

    ``weight`` is (C, 1, KT, KH, KW); the output is channels-last on the fast path. Under CPU
    autocast the kernels run in float32 on a float32 copy of ``x`` (a bf16 conv of PyTorch's is slower
    than the fp32 kernel), so the convs around it still run in bf16 and only this one stays fp32.
    """
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and x.dim() == 5:
        with torch.autocast("cpu", enabled=False):
            x32, w32 = x.float(), weight.float()
            if _fast_path_applies(x32, w32):
                return _ChannelwiseConv3dFunction.apply(x32, w32, stride, tuple(padding))
    if _fast_path_applies(x, weight):
        return _ChannelwiseConv3dFunction.apply(x, weight, stride, tuple(padding))
    return nn.functional.conv3d(x, weight, stride=(1, stride, stride), padding=tuple(padding),
                                groups=weight.shape[0])


class ChannelwiseConv3d(nn.Conv3d):
    """Drop-in ``nn.Conv3d`` that runs a channelwise conv with the fast kernels when they apply.

    Same constructor, parameters and state dict as ``nn.Conv3d``; configurations the kernels do
    not cover (dilation, temporal stride, unequal H/W strides, non-zero padding modes,
    groups != channels) are refused at construction. A bias is added after the kernel.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        stride, padding = self.stride, self.padding
        if not (self.groups == self.in_channels == self.out_channels
                and self.dilation == (1, 1, 1) and stride[0] == 1 and stride[1] == stride[2]
                and self.padding_mode == "zeros" and not isinstance(padding, str)):
            raise ValueError("ChannelwiseConv3d needs groups == in_channels == out_channels, no "
                             "dilation, temporal stride 1, equal H/W strides and zero padding; got "
                             f"{self.extra_repr()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of ``x``, through the fast kernels when they apply."""
        y = channelwise_conv3d(x, self.weight, self.stride[1], self.padding)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1, 1)


def _row_split(batch: int, rows: int) -> int:
    """The smallest divisor k of ``rows`` with ``batch * k`` at least oneDNN's minimum batch (``batch * rows`` is)."""
    return next(k for k in range(-(-_ONEDNN_MIN_BATCH // batch), rows + 1) if rows % k == 0)


def _intel_cpu() -> bool:
    """Whether this is an Intel CPU (``vendor_id`` in /proc/cpuinfo), where MKL's matrix product is the fastest."""
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and "GenuineIntel" in cpuinfo.read_text()


class PointwiseConv3d(nn.Conv3d):
    """Drop-in ``nn.Conv3d`` for an unstrided 1x1x1 conv that avoids PyTorch's slow path on CPU.

    A 1x1x1 conv treats every voxel alike, so a channels-last (N, C, T, H, W) CPU batch can be viewed
    without a copy as other shapes. On an Intel CPU (``matmul``) it runs as one (N*T*H*W, C) matrix
    product, faster than oneDNN's conv at every batch there; elsewhere a batch under 16 on one thread is
    viewed as N*k samples of T*H/k x 1 x W voxels (the smallest k that reaches 16) so that oneDNN's conv
    runs, not PyTorch's native slow_conv3d (2-3x slower per clip: the batch-size cliff); there the matrix
    product measured slower than oneDNN (docs/performance-batch.md). A pooled (N, C, 1, 1, 1) input is
    a matrix product everywhere. Same parameters and state dict as ``nn.Conv3d``; other kernel sizes,
    strides, paddings, dilations and groups are refused.
    """

    matmul: bool = _intel_cpu()

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if not (self.kernel_size == self.stride == self.dilation == (1, 1, 1) and self.padding == (0, 0, 0)
                and self.groups == 1):
            raise ValueError(f"PointwiseConv3d needs a 1x1x1 kernel, stride 1, no padding or dilation and "
                             f"groups == 1; got {self.extra_repr()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of ``x`` by the fastest path for its shape and this CPU; under tracing always the conv (so
        fvcore counts it)."""
        if _traced() or not (x.dim() == 5 and x.device.type == "cpu"):
            return super().forward(x)
        n, channels, t, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last_3d)
        if x.shape[2:] == (1, 1, 1) or (self.matmul and channels_last):
            y = nn.functional.linear(x.permute(0, 2, 3, 4, 1).reshape(-1, channels),
                                     self.weight.flatten(1), self.bias)
            return y.view(n, t, h, w, self.out_channels).permute(0, 4, 1, 2, 3)
        if not (channels_last and n < _ONEDNN_MIN_BATCH <= n * t * h and torch.get_num_threads() == 1):
            return super().forward(x)
        k = _row_split(n, t * h)
        rows = x.permute(0, 2, 3, 4, 1).reshape(n * k, t * h // k, 1, w, channels).permute(0, 4, 1, 2, 3)
        y = self._conv_forward(rows, self.weight, self.bias)
        return y.permute(0, 2, 3, 4, 1).reshape(n, t, h, w, y.shape[1]).permute(0, 4, 1, 2, 3)
