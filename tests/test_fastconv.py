"""The fast channelwise and pointwise convs equal PyTorch's, in the layer and in whole networks, and can be switched off.

The first test in a fresh environment compiles the kernels (about 10 s, once per machine).
"""

import warnings
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import cpp_extension

from x3dsearch import build_model, fastconv, preset
from x3dsearch.fastconv import ChannelwiseConv3d, PointwiseConv3d, channelwise_conv3d

CL = torch.channels_last_3d
needs_kernels = pytest.mark.skipif(not fastconv.available(), reason="the fast conv did not compile here")

# (batch, channels, frames, height, width, kernel, stride, padding)
SHAPES = [
    (2, 5, 3, 7, 9, (3, 3, 3), 1, (1, 1, 1)),
    (3, 13, 1, 6, 5, (3, 3, 3), 2, (1, 1, 1)),      # T=1: temporal taps fall in the padding
    (1, 54, 4, 11, 11, (3, 3, 3), 2, (1, 1, 1)),    # batch 1, odd sides, stride 2
    (2, 33, 2, 9, 7, (3, 3, 3), 1, (1, 1, 1)),
    (2, 20, 5, 4, 4, (5, 1, 1), 1, (2, 0, 0)),      # the stem's temporal conv
    (1, 3, 2, 3, 3, (3, 3, 3), 2, (1, 1, 1)),
    (2, 70, 3, 2, 2, (3, 3, 3), 2, (1, 1, 1)),
    (1, 1, 2, 5, 5, (3, 3, 3), 1, (1, 1, 1)),
    (1, 40, 3, 48, 47, (3, 3, 3), 1, (1, 1, 1)),    # frames large enough to be split into chunks
]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """float32 agreement, the absolute tolerance relative to the expected tensor's magnitude."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(1.0, expected.abs().max().item()))


def _run(conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
         weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output, input gradient and weight gradient of ``conv`` for a fixed random output gradient."""
    x, weight = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    y = conv(x, weight)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    return y, x.grad, weight.grad


def _reference(stride: int, padding: tuple[int, int, int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda x, w: F.conv3d(x, w, stride=(1, stride, stride), padding=padding, groups=w.shape[0])


def _tiny_config():
    return preset("XS", frames=3, crop=24, num_classes=7, head_width=32, depth=1.0, dropout=0.0)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, c, t, h, w, kernel, stride, padding", SHAPES)
def test_matches_reference(n, c, t, h, w, kernel, stride, padding, threads):
    torch.manual_seed(0)
    x = torch.randn(n, c, t, h, w).contiguous(memory_format=CL)
    weight = torch.randn(c, 1, *kernel)
    expected = _run(_reference(stride, padding), x, weight)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        actual = _run(lambda x, w: channelwise_conv3d(x, w, stride, padding), x, weight)
    finally:
        torch.set_num_threads(previous)
    for a, e in zip(actual, expected):
        _close(a, e)
    assert actual[0].is_contiguous(memory_format=CL)


@needs_kernels
def test_default_layout_input_no_grad_and_single_gradients():
    torch.manual_seed(0)
    x, weight = torch.randn(2, 24, 3, 9, 9), torch.randn(24, 1, 3, 3, 3)
    expected = _run(_reference(2, (1, 1, 1)), x, weight)
    _close(_run(lambda x, w: channelwise_conv3d(x, w, 2), x, weight)[1], expected[1])
    with torch.no_grad():
        _close(channelwise_conv3d(x, weight, 2), expected[0])
    _close(_run(lambda x, w: channelwise_conv3d(x.detach(), w, 2), x, weight)[2], expected[2])
    only_x = x.clone().requires_grad_()
    channelwise_conv3d(only_x, weight, 2).backward(torch.randn(expected[0].shape,
                                                               generator=torch.Generator().manual_seed(1)))
    _close(only_x.grad, expected[1])


@needs_kernels
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.usefixtures("fused_at_any_size")  # fuse the tiny model's BatchNorms too
def test_model_same_logits_and_gradients_with_flag_on_and_off(channels_last):
    config = _tiny_config()
    torch.manual_seed(0)
    reference, fast = build_model(config, fast=False), build_model(config, fast=True)
    fast.load_state_dict(reference.state_dict())
    clips, labels = torch.randn(2, 3, config.frames, config.crop, config.crop), torch.tensor([1, 4])
    results = []
    for model in (reference, fast):
        if channels_last:
            model.to(memory_format=CL)
        logits = model(clips.contiguous(memory_format=CL) if channels_last else clips)
        F.cross_entropy(logits, labels).backward()
        results.append((logits, {name: p.grad for name, p in model.named_parameters()}))
    (ref_logits, ref_grads), (fast_logits, fast_grads) = results
    _close(fast_logits, ref_logits)
    assert fast_grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        _close(fast_grads[name], grad)
    fast.eval()
    reference.eval()
    with torch.no_grad():
        _close(fast(clips), reference(clips))


def test_flag_and_env_var_select_the_conv(monkeypatch):
    config = _tiny_config()

    def channelwise_types(model: nn.Module) -> set[type]:
        return {type(m) for m in model.modules() if isinstance(m, nn.Conv3d) and m.groups > 1}

    def unstrided_pointwise_types(model: nn.Module) -> set[type]:  # the blocks', conv5's, lin5's and SE's
        return {type(m) for name, m in model.named_modules() if isinstance(m, nn.Conv3d)
                and m.kernel_size == m.stride == (1, 1, 1) and name.endswith((".a", ".c", "conv5.0", "lin5", ".fc1", ".fc2"))}

    monkeypatch.delenv(fastconv.ENV_VAR, raising=False)
    assert channelwise_types(build_model(config)) == {ChannelwiseConv3d}
    assert unstrided_pointwise_types(build_model(config)) == {PointwiseConv3d}
    assert channelwise_types(build_model(config, fast=False)) == {nn.Conv3d}
    assert unstrided_pointwise_types(build_model(config, fast=False)) == {nn.Conv3d}
    monkeypatch.setenv(fastconv.ENV_VAR, "0")
    assert channelwise_types(build_model(config)) == {nn.Conv3d}
    assert channelwise_types(build_model(config, fast=True)) == {ChannelwiseConv3d}


def test_state_dicts_identical_and_interchangeable():
    config = _tiny_config()
    reference, fast = build_model(config, fast=False).state_dict(), build_model(config, fast=True).state_dict()
    assert list(reference) == list(fast)
    assert all(reference[k].shape == fast[k].shape for k in reference)
    build_model(config, fast=True).load_state_dict(reference)
    build_model(config, fast=False).load_state_dict(fast)


def test_tracing_sees_the_reference_conv():
    conv = ChannelwiseConv3d(4, 4, 3, padding=1, groups=4, bias=False)
    graph = str(torch.jit.trace(conv, torch.randn(1, 4, 2, 5, 5)).graph)
    assert "aten::_convolution" in graph and "PythonOp" not in graph


@needs_kernels
def test_bias_is_added_after_the_kernel():
    torch.manual_seed(0)
    conv = ChannelwiseConv3d(6, 6, 3, padding=1, groups=6, bias=True)
    x = torch.randn(2, 6, 3, 5, 5).contiguous(memory_format=CL)
    expected = F.conv3d(x, conv.weight, conv.bias, padding=1, groups=6)
    _close(conv(x), expected)


def test_unsupported_configurations_are_refused():
    for kwargs in ({"groups": 2}, {"dilation": 2}, {"stride": (2, 1, 1)},
                   {"padding_mode": "reflect"}, {"padding": "same"}):
        options = {"groups": 4, "bias": False, "padding": 1, **kwargs}
        with pytest.raises(ValueError, match="ChannelwiseConv3d needs"):
            ChannelwiseConv3d(4, 4, 3, **options)


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler")

    torch.manual_seed(0)
    x, weight = torch.randn(1, 6, 2, 5, 5), torch.randn(6, 1, 3, 3, 3)
    monkeypatch.setattr(cpp_extension, "load", broken)
    fastconv._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not build the fast CPU kernels"):
            assert not fastconv.available()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for a, e in zip(_run(lambda x, w: channelwise_conv3d(x, w), x, weight),
                            _run(_reference(1, (1, 1, 1)), x, weight)):
                _close(a, e)
    finally:
        fastconv._library.cache_clear()


@needs_kernels
def test_autocast_runs_the_float32_kernel_and_keeps_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 7, 7).to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_()
    weight = torch.randn(8, 1, 3, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = channelwise_conv3d(x, weight)
    assert y.dtype == torch.float32  # PyTorch's conv would have returned bf16 under autocast
    _close(y, _reference(1, (1, 1, 1))(x.detach().float(), weight.detach()))
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32


@needs_kernels
def test_model_under_bf16_autocast_stays_near_float32():
    """The fast model under bf16 autocast against the fp32 reference model: logits within 3% of their
    largest magnitude, and every non-zero gradient pointing the same way (cosine >= 0.9; bf16 keeps 8
    mantissa bits, and PyTorch's own bf16 path gives a stem gradient a cosine of 0.3 on this batch)."""
    config = _tiny_config()
    torch.manual_seed(0)
    reference, fast = build_model(config, fast=False), build_model(config, fast=True)
    fast.load_state_dict(reference.state_dict())
    clips, labels = torch.randn(4, 3, config.frames, config.crop, config.crop), torch.tensor([1, 4, 0, 6])
    results = []
    for model, bf16 in ((reference, False), (fast, True)):
        model.to(memory_format=CL)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(clips.contiguous(memory_format=CL)).float()
        F.cross_entropy(logits, labels).backward()
        results.append((logits, {name: p.grad.float() for name, p in model.named_parameters()}))
    (ref_logits, ref_grads), (fast_logits, fast_grads) = results
    torch.testing.assert_close(fast_logits, ref_logits, rtol=0.0, atol=0.03 * ref_logits.abs().max().item())
    cosines = {name: F.cosine_similarity(fast_grads[name].flatten(), grad.flatten(), dim=0).item()
               for name, grad in ref_grads.items() if grad.abs().max() > 0}
    assert len(cosines) >= 40  # the rest start at zero: the blocks' last BatchNorm is zero-initialised
    assert min(cosines.values()) >= 0.9, sorted(cosines.items(), key=lambda item: item[1])[:3]


# (batch, in channels, out channels, frames, height, width): batches below, at and above oneDNN's 16
POINTWISE_SHAPES = [
    (4, 24, 54, 16, 14, 14),   # X3D-M's res2 at the 56-px proxy input: folded to 16 samples of 4 frames
    (1, 7, 5, 1, 7, 3),        # 7 rows of voxels in all: too few to fold, PyTorch's own choice
    (3, 16, 33, 1, 12, 5),     # one frame (X2D): the rows of H are folded
    (8, 9, 17, 4, 3, 2),
    (8, 6, 10, 1, 2, 3),       # folded down to one row of voxels a sample
    (15, 32, 8, 2, 5, 5),
    (16, 12, 20, 3, 4, 4),     # at oneDNN's minimum: not folded
    (2, 10, 6, 5, 1, 1),       # 1x1 spatial
    (16, 48, 2048, 1, 1, 1),   # pooled, as lin5 and squeeze-excitation: a matrix product
    (3, 8, 5, 1, 1, 1),
]


def _pointwise_run(conv: nn.Conv3d, x: torch.Tensor, threads: int) -> list[torch.Tensor]:
    """Output and input, weight and bias gradients of ``conv`` on ``threads`` threads, for a fixed output gradient."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = conv(x)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    finally:
        torch.set_num_threads(previous)
    return [y, x.grad, conv.weight.grad] + ([] if conv.bias is None else [conv.bias.grad])


@pytest.mark.parametrize("matmul", [True, False], ids=["matmul", "onednn"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n, c_in, c_out, t, h, w", POINTWISE_SHAPES)
def test_pointwise_matches_reference(n, c_in, c_out, t, h, w, bias, channels_last, threads, matmul, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(PointwiseConv3d, "matmul", matmul)
    conv = PointwiseConv3d(c_in, c_out, 1, bias=bias)
    reference = nn.Conv3d(c_in, c_out, 1, bias=bias)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(n, c_in, t, h, w)
    x = x.contiguous(memory_format=CL) if channels_last else x
    actual, expected = _pointwise_run(conv, x, threads), _pointwise_run(reference, x, threads)
    for a, e in zip(actual, expected, strict=True):
        _close(a, e)
    if channels_last and (matmul or n * t * h >= 16):
        assert actual[0].is_contiguous(memory_format=CL)


def _ops_of_one_thread_step(conv: nn.Module, x: torch.Tensor) -> set[str]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.profiler.profile() as prof:
            conv(x).sum().backward()
    finally:
        torch.set_num_threads(previous)
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("n", [4, 16])
def test_pointwise_batches_avoid_the_native_conv_on_either_path(n, monkeypatch):
    """On one thread PyTorch would give a batch of 4 its native slow_conv3d (the batch-size cliff)."""
    x = torch.randn(n, 24, 16, 14, 14).contiguous(memory_format=CL).requires_grad_()
    monkeypatch.setattr(PointwiseConv3d, "matmul", True)
    ops = _ops_of_one_thread_step(PointwiseConv3d(24, 54, 1, bias=False), x)
    assert not any("conv" in op for op in ops) and "aten::mm" in ops, sorted(ops)
    monkeypatch.setattr(PointwiseConv3d, "matmul", False)
    ops = _ops_of_one_thread_step(PointwiseConv3d(24, 54, 1, bias=False), x)
    assert "aten::mkldnn_convolution" in ops and not any("slow_conv3d" in op for op in ops), sorted(ops)


def test_pointwise_pooled_input_is_a_matrix_product_and_traces_as_a_conv():
    conv = PointwiseConv3d(24, 54, 1, bias=True)
    x = torch.randn(4, 24, 1, 1, 1).requires_grad_()
    with torch.profiler.profile() as prof:
        conv(x).sum().backward()
    ops = {event.key for event in prof.key_averages()}
    assert not any("convolution" in op for op in ops), sorted(ops)
    graph = str(torch.jit.trace(conv, x.detach()).graph)
    assert "aten::_convolution" in graph and "aten::linear" not in graph


def test_pointwise_unsupported_configurations_are_refused():
    for args, kwargs in (((4, 4, 3), {}), ((4, 4, 1), {"stride": 2}), ((4, 4, 1), {"padding": 1}),
                         ((4, 4, 1), {"groups": 2}), ((4, 4, 1), {"dilation": 2}), ((4, 4, 1), {"padding": "same"})):
        with pytest.raises(ValueError, match="PointwiseConv3d needs"):
            PointwiseConv3d(*args, **kwargs)
