"""The fused BatchNorm + activation equals PyTorch's BatchNorm3d and activation, and steps aside when it must."""

import pytest
import torch
from torch import nn

from x3dsearch import fastconv, fastnorm
from x3dsearch.fastnorm import batchnorm_act

CL = torch.channels_last_3d
needs_kernels = pytest.mark.skipif(not fastconv.available(), reason="the fast kernels did not compile here")
ACTIVATIONS = [None, nn.ReLU, nn.SiLU]


pytestmark = pytest.mark.usefixtures("fused_at_any_size")  # the size gate has its own test below


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """float32 agreement, the absolute tolerance relative to the expected tensor's magnitude."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(1.0, expected.abs().max().item()))


def _norm(channels: int, seed: int = 0, **kwargs: object) -> nn.BatchNorm3d:
    generator = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm3d(channels, **kwargs)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.normal_(generator=generator)
    return norm


def _run(fn, x: torch.Tensor, norm: nn.BatchNorm3d) -> tuple[torch.Tensor, ...]:
    """Output, input, weight and bias gradients of ``fn(x)`` for a fixed random output gradient."""
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=CL))
    return y, x.grad, norm.weight.grad, norm.bias.grad


# (batch, channels, frames, height, width): channel counts below, at and off the vector widths
SHAPES = [(2, 3, 2, 5, 7), (3, 5, 1, 4, 4), (1, 12, 3, 6, 5), (2, 21, 2, 9, 7), (4, 54, 2, 7, 7),
          (1, 70, 5, 12, 11), (2, 16, 1, 2, 2)]


@needs_kernels
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_batchnorm_and_activation(shape, activation):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 2).contiguous(memory_format=CL)
    act = activation() if activation else None
    fused, reference = _norm(shape[1]), _norm(shape[1])
    got = _run(lambda x: batchnorm_act(x, fused, act), x, fused)
    want = _run(lambda x: act(reference(x)) if act else reference(x), x, reference)
    assert got[0].is_contiguous(memory_format=CL) and got[1].is_contiguous(memory_format=CL)
    for a, e in zip(got, want):
        _close(a, e)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        _close(getattr(fused, name), getattr(reference, name))


@needs_kernels
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES[:5])
def test_residual_block_end_matches(shape, activation):
    """act(norm(x) + residual), a residual block's end: outputs and the gradients of x, the residual
    and the BatchNorm's parameters (SiLU with a residual runs the modules)."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 2).contiguous(memory_format=CL)
    residual = torch.randn(shape).contiguous(memory_format=CL)
    act = activation() if activation else None
    results = []
    for fused in (True, False):
        norm = _norm(shape[1])
        r = residual.clone().requires_grad_()
        if fused:
            fn = lambda x: batchnorm_act(x, norm, act, residual=r)  # noqa: E731
        else:
            fn = lambda x: act(norm(x) + r) if act else norm(x) + r  # noqa: E731
        results.append((*_run(fn, x, norm), r.grad))
    for a, e in zip(*results):
        _close(a, e)


class _Gate(nn.Module):
    """A squeeze-excitation as the kernel takes it: se(x) = x * gate_of(per-sample channel means of x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv3d(channels, 3, 1), nn.Conv3d(3, channels, 1)

    def gate_of(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_of(x.mean(dim=(2, 3, 4), keepdim=True))


@needs_kernels
@pytest.mark.parametrize("shape", SHAPES)
def test_squeeze_excitation_before_silu_matches(shape):
    """silu(se(norm(x))): outputs, running statistics and the gradients of x, the BatchNorm's and the
    squeeze-excitation's parameters (the pooled path's gradient enters the kernel's input gradient)."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 2).contiguous(memory_format=CL)
    results = []
    for fused in (True, False):
        torch.manual_seed(1)
        norm, se = _norm(shape[1]), _Gate(shape[1])
        if fused:
            fn = lambda x: batchnorm_act(x, norm, nn.SiLU(), se=se)  # noqa: E731
        else:
            fn = lambda x: nn.functional.silu(se(norm(x)))  # noqa: E731
        results.append((*_run(fn, x, norm), *(p.grad for p in se.parameters()), norm.running_mean, norm.running_var))
    for a, e in zip(*results):
        _close(a, e)


@needs_kernels
def test_frozen_squeeze_excitation_gets_no_gradients_and_the_rest_does():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 2, 4, 4).contiguous(memory_format=CL).requires_grad_()
    norm, se = _norm(8), _Gate(8)
    se.fc1.requires_grad_(False)
    batchnorm_act(x, norm, nn.SiLU(), se=se).sum().backward()
    assert se.fc1.weight.grad is None and se.fc2.weight.grad is not None
    assert x.grad is not None and norm.weight.grad is not None


@needs_kernels
def test_running_statistics_over_several_batches_with_cumulative_momentum():
    """Precise BatchNorm sets momentum None (a cumulative average); every batch counts equally."""
    fused, reference = _norm(9, momentum=None), _norm(9, momentum=None)
    for step in range(3):
        x = (torch.randn(2, 9, 2, 4, 4) * (step + 1) + step).contiguous(memory_format=CL)
        with torch.no_grad():
            batchnorm_act(x, fused, nn.ReLU())
            reference(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        _close(getattr(fused, name), getattr(reference, name))


@needs_kernels
def test_silu_stays_finite_and_exact_far_from_zero():
    """The kernel's exp is clamped: outputs and gradients where SiLU's input reaches +-200 match torch's."""
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]).repeat(2, 4, 1).view(2, 4, 7, 1, 1)
    x = x.contiguous(memory_format=CL)
    fused, reference = _norm(4), _norm(4)
    with torch.no_grad():
        for norm in (fused, reference):
            norm.weight.fill_(120.0)  # the normalised values are within +-1.7, so z within +-200
            norm.bias.fill_(0.0)
    got = _run(lambda x: batchnorm_act(x, fused, nn.SiLU()), x, fused)
    want = _run(lambda x: nn.functional.silu(reference(x)), x, reference)
    assert want[0].max() > 150 and (want[0].abs() < 1e-30).any()  # inputs beyond the clamp, both ways
    assert all(t.isfinite().all() for t in got)
    for a, e in zip(got, want):
        _close(a, e)


@needs_kernels
def test_variance_stays_accurate_with_an_outlier_in_the_first_rows():
    """The sums are shifted by the mean of the first rows; an outlier there costs no more accuracy
    (against float64) than it costs PyTorch's BatchNorm."""
    x = torch.randn(4, 8, 4, 8, 8) + 1000.0
    x[0, :, 0, 0, 0] = 1e5
    x = x.contiguous(memory_format=CL)
    truth = _norm(8).double()
    truth(x.double())
    errors = {}
    for name in ("fused", "torch"):
        norm = _norm(8)
        with torch.no_grad():
            batchnorm_act(x, norm, nn.ReLU()) if name == "fused" else norm(x)
        errors[name] = ((norm.running_var.double() - truth.running_var) / truth.running_var).abs().max().item()
    assert errors["fused"] <= 2 * errors["torch"] + 1e-7, errors


@needs_kernels
def test_squeeze_excitation_backward_twice_with_a_retained_graph():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 2, 4, 4).contiguous(memory_format=CL).requires_grad_()
    norm, se = _norm(8), _Gate(8)
    y = batchnorm_act(x, norm, nn.SiLU(), se=se).square().sum()
    y.backward(retain_graph=True)
    first = se.fc1.weight.grad.clone()
    y.backward()
    _close(se.fc1.weight.grad, 2 * first)


def test_a_gradient_hook_on_the_squeeze_excitation_runs_once(monkeypatch):
    """A hook on an SE parameter would run twice inside the fused op, so that case runs the modules."""
    monkeypatch.setattr("x3dsearch.fastnorm._FusedBatchNormGateSiLU.apply",
                        lambda *args: pytest.fail("the fused kernel ran"))
    norm, se = _norm(8), _Gate(8)
    calls = []
    se.fc2.weight.register_hook(lambda grad: calls.append(grad))
    batchnorm_act(torch.randn(2, 8, 2, 4, 4).contiguous(memory_format=CL), norm, nn.SiLU(), se=se).sum().backward()
    assert len(calls) == 1


class _Subclass(nn.BatchNorm3d):
    """Stands for SyncBatchNorm and other BatchNorm subclasses, whose forward may differ."""


def test_falls_back_to_the_modules_where_the_kernel_does_not_apply(monkeypatch):
    """Eval mode, a BatchNorm subclass, a standard-layout batch, autocast and the switch run the modules."""
    monkeypatch.setattr("x3dsearch.fastnorm._FusedBatchNormAct.apply",
                        lambda *args: pytest.fail("the fused kernel ran"))
    x = torch.randn(2, 6, 2, 3, 3)
    cl = x.contiguous(memory_format=CL)
    for batch, norm, fast in [(cl, _norm(6).eval(), None), (cl, _Subclass(6), None), (x, _norm(6), None),
                              (cl, _norm(6), False)]:
        expected = nn.functional.relu(norm(batch))
        _close(batchnorm_act(batch, norm, nn.ReLU(), fast), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batchnorm_act(cl, _norm(6), nn.ReLU())
    monkeypatch.setenv(fastconv.ENV_VAR, "0")
    batchnorm_act(cl, _norm(6), nn.ReLU())


@needs_kernels
def test_batches_below_the_size_gate_run_the_modules(monkeypatch):
    """Small batches run the modules (the fused path's fixed cost would outweigh its gain), larger ones the kernel."""
    calls, kernel = [], fastnorm._FusedBatchNormAct.apply
    monkeypatch.setattr("x3dsearch.fastnorm._FusedBatchNormAct.apply",
                        lambda *args: calls.append(args[0].numel()) or kernel(*args))
    monkeypatch.setattr("x3dsearch.fastnorm._MIN_ELEMENTS", 2 * 6 * 2 * 3 * 3)
    for x in (torch.randn(2, 6, 2, 3, 2), torch.randn(2, 6, 2, 3, 3)):
        _close(batchnorm_act(x.contiguous(memory_format=CL), _norm(6), nn.ReLU()), nn.functional.relu(_norm(6)(x)))
    assert calls == [2 * 6 * 2 * 3 * 3]


def test_a_single_value_per_channel_raises_as_batchnorm_does():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batchnorm_act(torch.randn(1, 4, 1, 1, 1).contiguous(memory_format=CL), _norm(4), nn.ReLU())


@needs_kernels
def test_two_values_per_channel_as_close_to_float64_as_pytorch():
    """With two values per channel the normalisation is ill-conditioned in float32 for any kernel:
    measured against float64, the fused one's error stays within twice PyTorch's own."""
    errors: dict[str, float] = {"fused": 0.0, "torch": 0.0}
    for seed in range(10):
        torch.manual_seed(seed)
        x = (torch.randn(2, 16, 1, 1, 1) * 3 + 2).contiguous(memory_format=CL)
        truth = _norm(16).double()
        want = _run(lambda x: torch.relu(truth(x)), x.double(), truth)
        for name in errors:
            norm = _norm(16)
            fn = (lambda x: batchnorm_act(x, norm, nn.ReLU())) if name == "fused" else (lambda x: torch.relu(norm(x)))
            got = _run(fn, x, norm)
            errors[name] = max([errors[name]] + [(a.double() - e).abs().max().item() for a, e in zip(got, want)])
    assert errors["fused"] <= 2 * errors["torch"], errors
