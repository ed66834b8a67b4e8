"""Training-mode BatchNorm fused with what follows it in a block, for CPU training in channels-last memory.

PyTorch runs a BatchNorm, a squeeze-excitation gate, a residual add and a ReLU or SiLU as separate
passes over memory, forward and backward; ``csrc/batchnorm_act.cpp`` does each direction in two
passes (sums, then output), recomputing the activation's derivative instead of storing it. The
squeeze-excitation's small layers on the pooled (N, C) values run in PyTorch, between the passes.
It is built with the channelwise conv (:mod:`x3dsearch.fastconv`) and switched with it
(``X3DSEARCH_FAST_CONV``).

Public API: :func:`batchnorm_act`, ``act(se(norm(x)) + residual)`` through the fused kernel whenever
it applies. Modules stay ordinary ``nn.BatchNorm3d`` / ``nn.ReLU`` / ``nn.SiLU``, so state dicts,
BatchNorm folding and SyncBatchNorm conversion are unchanged; anything the kernel does not cover
runs the modules themselves. On the fused path the modules are not called, so their forward hooks
do not run (and a squeeze-excitation with a gradient hook on a parameter runs unfused, since its
small layers' backward would call the hook twice).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.autograd.profiler import record_function

from . import fastconv

__all__ = ["batchnorm_act", "SqueezeExcitation"]

_ACTIVATIONS: dict[type, int] = {type(None): 0, nn.Identity: 0, nn.ReLU: 1, nn.SiLU: 2}
_RELU, _SILU = 1, 2
# Below this many elements a batch runs the modules: the fused path's fixed Python and autograd cost
# (0.1-0.2 ms a call) outweighs its saved memory passes. Measured break-even on one thread (more threads
# not measured): 0.15M-0.35M elements (experiments/bench_fastnorm.py); most of the CPU proxy's sit below it.
_MIN_ELEMENTS = 1 << 18


class SqueezeExcitation(Protocol):
    """A squeeze-excitation module as :func:`batchnorm_act` takes it: ``se(x) == x * se.gate_of(pool(x))``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def gate_of(self, pooled: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1, 1) gate of the (N, C, 1, 1, 1) per-sample channel means."""
        ...

    def parameters(self) -> Any: ...


def _ops() -> Any:
    return fastconv._library().x3dsearch_batchnorm_act


def _grads_of_sums(sum_g: torch.Tensor, sum_gx: torch.Tensor, invstd: torch.Tensor, scale: torch.Tensor,
                   count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dweight, dbias, kx, k0) of a BatchNorm from the channel sums of g and g (x - mean), where
    dx = scale * g + kx * (x - mean) + k0 (BatchNorm's backward, written per channel)."""
    mean_g, mean_gxhat = sum_g / count, sum_gx * invstd / count
    return sum_gx * invstd, sum_g, -scale * invstd * mean_gxhat, -scale * mean_g


class _FusedBatchNormAct(torch.autograd.Function):
    """act(norm(x) + residual) with the batch's statistics; mean and variance ride along undifferentiated."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                residual: torch.Tensor | None, eps: float, activation: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var, _ = _ops().stats(x)
        invstd = torch.rsqrt(var + eps)
        y = _ops().apply(x, mean, weight * invstd, bias, activation, None, residual)
        ctx.save_for_backward(x, y if activation == _RELU else None, weight, bias, mean, invstd)
        ctx.activation, ctx.residual = activation, residual is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y, weight, bias, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        scale, (samples, channels) = weight * invstd, x.shape[:2]
        sum_g, sum_gx, _ = _ops().grad_sums(grad, x, y, mean, scale, bias, ctx.activation, None)
        dweight, dbias, kx, k0 = _grads_of_sums(sum_g.sum(0), sum_gx.sum(0), invstd, scale, x.numel() // channels)
        residual = ctx.residual and ctx.needs_input_grad[3]
        dx, dresidual = _ops().grad_input(grad, x, y, mean, scale, bias, ctx.activation, None, kx,
                                          k0.expand(samples, channels).contiguous(), residual)
        return dx, dweight, dbias, dresidual if residual else None, None, None


class _FusedBatchNormGateSiLU(torch.autograd.Function):
    """silu(se(norm(x))) with the batch's statistics; ``se.gate_of`` runs under autograd inside, its
    parameters ride along as inputs so that they get their gradients here."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                se: SqueezeExcitation, *se_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var, sample_means = _ops().stats(x)
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        with torch.enable_grad(), record_function("x3dsearch_batchnorm_act::gate"):
            pooled = ((sample_means - mean) * scale + bias).detach().requires_grad_()
            gate5 = se.gate_of(pooled[:, :, None, None, None])
        gate = gate5.detach().reshape(pooled.shape).contiguous()
        y = _ops().apply(x, mean, scale, bias, _SILU, gate, None)
        ctx.save_for_backward(x, weight, bias, mean, invstd, sample_means, gate)
        ctx.graph = (pooled, gate5, se_params)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, invstd, sample_means, gate = ctx.saved_tensors
        pooled, gate5, se_params = ctx.graph
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        scale, rows = weight * invstd, x.numel() // (x.shape[0] * x.shape[1])
        sum_h, sum_hx, dgate = _ops().grad_sums(grad, x, None, mean, scale, bias, _SILU, gate)
        trained = [p for p in se_params if p.requires_grad]  # a frozen SE gets no gradients
        with record_function("x3dsearch_batchnorm_act::gate_backward"):  # the graph is tiny: keep it
            dpooled, *dtrained = torch.autograd.grad(gate5, [pooled, *trained], dgate.view_as(gate5),
                                                     allow_unused=True, retain_graph=True)
        grads = iter(dtrained)
        dparams = [next(grads) if p.requires_grad else None for p in se_params]
        # the pooled values are each sample's mean of z: dpooled / rows enters every row's gradient of z
        sum_g = sum_h.sum(0) + dpooled.sum(0)
        sum_gx = sum_hx.sum(0) + (dpooled * (sample_means - mean)).sum(0)
        dweight, dbias, kx, k0 = _grads_of_sums(sum_g, sum_gx, invstd, scale, x.numel() // x.shape[1])
        dx, _ = _ops().grad_input(grad, x, None, mean, scale, bias, _SILU, gate, kx,
                                  (k0 + scale * dpooled / rows).contiguous(), False)
        return (dx, dweight, dbias, None, None, *dparams)


def _channels_last_float(x: torch.Tensor) -> bool:
    return (x.dim() == 5 and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last_3d))


def _se_applies(se: SqueezeExcitation | None, act: nn.Module | None) -> bool:
    """No squeeze-excitation, or one with ``gate_of`` before SiLU and no gradient hooks on its parameters."""
    return se is None or (type(act) is nn.SiLU and hasattr(se, "gate_of")
                          and not any(p._backward_hooks for p in se.parameters()))


def _residual_applies(residual: torch.Tensor | None, x: torch.Tensor, act: nn.Module | None,
                      se: SqueezeExcitation | None) -> bool:
    """No residual, or one like x after no squeeze-excitation and before ReLU or no activation."""
    return residual is None or (se is None and type(act) is not nn.SiLU and residual.shape == x.shape
                                and _channels_last_float(residual))


def _applies(x: torch.Tensor, norm: nn.Module, act: nn.Module | None, fast: bool | None,
             se: SqueezeExcitation | None, residual: torch.Tensor | None) -> bool:
    """A training-mode, affine ``nn.BatchNorm3d`` (not a subclass) on a channels-last float32 CPU batch
    of at least ``_MIN_ELEMENTS`` elements, followed by what the kernel has."""
    return (fastconv.enabled(fast) and type(norm) is nn.BatchNorm3d and norm.training and norm.affine
            and type(act) in _ACTIVATIONS and _se_applies(se, act) and _residual_applies(residual, x, act, se)
            and _channels_last_float(x) and x.numel() >= max(_MIN_ELEMENTS, x.shape[1] + 1)
            and norm.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not fastconv._traced()
            and fastconv._kernels() is not None)


def _update_running_stats(norm: nn.BatchNorm3d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """What ``nn.BatchNorm3d`` does to its buffers in a training forward (unbiased variance)."""
    if not norm.track_running_stats:
        return
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.lerp_(mean, factor)
        norm.running_var.lerp_(var * (count / (count - 1)), factor)


def batchnorm_act(x: torch.Tensor, norm: nn.Module, act: nn.Module | None = None, fast: bool | None = None,
                  se: SqueezeExcitation | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(se(norm(x)) + residual)`` (each of ``act``, ``se``, ``residual`` left out if None), fused when it can be.

    The kernel applies to a training-mode affine ``nn.BatchNorm3d`` followed by nothing, ``nn.ReLU``
    or ``nn.SiLU`` on a channels-last float32 CPU batch big enough to gain (``_MIN_ELEMENTS``),
    outside autocast and compilation, with a squeeze-excitation only before SiLU and a residual only
    without one or the other; it updates the running statistics as the module would. ``fast=False``
    (or ``$X3DSEARCH_FAST_CONV=0``) always runs the modules.
    """
    if not _applies(x, norm, act, fast, se, residual):
        y = norm(x)
        y = y if se is None else se(y)
        y = y if residual is None else y + residual
        return y if act is None else act(y)
    if se is None:
        y, mean, var = _FusedBatchNormAct.apply(x, norm.weight, norm.bias, residual, norm.eps,
                                                   _ACTIVATIONS[type(act)])
    else:
        y, mean, var = _FusedBatchNormGateSiLU.apply(x, norm.weight, norm.bias, norm.eps, se, *se.parameters())
    _update_running_stats(norm, mean, var, x.numel() // x.shape[1])
    return y
