"""Training-mode BatchNorm fused with the activation after it, for CPU training in channels-last memory.

PyTorch runs a BatchNorm and the ReLU or SiLU after it as separate passes over memory, forward and
backward; ``csrc/batchnorm_act.cpp`` does each direction in two passes (statistics, then output),
recomputing the activation's derivative instead of storing it. It is built with the channelwise
conv (:mod:`x3dsearch.fastconv`) and switched with it (``X3DSEARCH_FAST_CONV``).

Public API: :func:`batchnorm_act`, ``act(norm(x))`` (or ``act(norm(x) + residual)``, a residual
block's end) through the fused kernel whenever it applies.
Modules stay ordinary ``nn.BatchNorm3d`` / ``nn.ReLU`` / ``nn.SiLU``, so state dicts, BatchNorm
folding and SyncBatchNorm conversion are unchanged; anything the kernel does not cover runs the
modules themselves.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from . import fastconv

__all__ = ["batchnorm_act"]

_ACTIVATIONS: dict[type, int] = {type(None): 0, nn.Identity: 0, nn.ReLU: 1, nn.SiLU: 2}
_RELU = 1


class _BatchNormActFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled forward and backward; batch mean and variance ride along undifferentiated."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                residual: torch.Tensor | None, eps: float, activation: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ops = fastconv._library().x3dsearch_batchnorm_act
        y, mean, var = ops.forward(x, weight, bias, eps, activation, residual)
        ctx.save_for_backward(x, y if activation == _RELU else None, weight, bias, mean, torch.rsqrt(var + eps))
        ctx.activation, ctx.residual = activation, residual is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ops = fastconv._library().x3dsearch_batchnorm_act
        x, y, weight, bias, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        dx, dweight, dbias, dresidual = ops.backward(grad, x, y, weight, bias, mean, invstd, ctx.activation,
                                                     ctx.residual)
        return dx, dweight, dbias, dresidual if ctx.residual else None, None, None


def _channels_last_float(x: torch.Tensor) -> bool:
    return (x.dim() == 5 and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last_3d))


def _applies(x: torch.Tensor, norm: nn.Module, act: nn.Module | None, fast: bool | None,
             residual: torch.Tensor | None) -> bool:
    """A training-mode, affine ``nn.BatchNorm3d`` (not a subclass) on a channels-last float32 CPU batch."""
    return (fastconv.enabled(fast) and type(norm) is nn.BatchNorm3d and norm.training and norm.affine
            and type(act) in _ACTIVATIONS and _channels_last_float(x) and x.numel() > x.shape[1]
            and norm.weight.dtype == torch.float32
            and (residual is None or (type(act) is not nn.SiLU and residual.shape == x.shape
                                      and _channels_last_float(residual)))
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and fastconv._kernels() is not None)


def batchnorm_act(x: torch.Tensor, norm: nn.Module, act: nn.Module | None = None, fast: bool | None = None,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(norm(x) + residual)`` (without ``act`` or ``residual`` if None), in one fused kernel when it applies.

    The kernel applies to a training-mode affine ``nn.BatchNorm3d`` followed by nothing,
    ``nn.ReLU`` or ``nn.SiLU`` (no residual with SiLU) on a channels-last float32 CPU batch,
    outside autocast and compilation; it updates the running statistics as the module would.
    ``fast=False`` (or ``$X3DSEARCH_FAST_CONV=0``) always runs the modules.
    """
    if not _applies(x, norm, act, fast, residual):
        y = norm(x) if residual is None else norm(x) + residual
        return y if act is None else act(y)
    y, mean, var = _BatchNormActFunction.apply(x, norm.weight, norm.bias, residual, norm.eps,
                                               _ACTIVATIONS[type(act)])
    if norm.track_running_stats:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            count = x.numel() // x.shape[1]
            norm.running_mean.lerp_(mean, factor)
            norm.running_var.lerp_(var * (count / (count - 1)), factor)
    return y
