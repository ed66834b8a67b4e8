"""The network generator: ``build_model(config)`` builds the X3D network a config describes.

Layout follows the paper's Table 1 and the published X3D code: a 1x3x3 stem conv and a
channelwise 5x1x1 temporal conv; residual stages of bottleneck blocks with a channelwise
3x3x3 conv, squeeze-excitation on every other block and Swish; conv5, global pooling, a
wide 1x1x1 "lin5" layer, dropout and the classifier. Fully convolutional in T, H and W.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import X3DConfig, round_width, stage_layout
from .fastconv import ChannelwiseConv3d, PointwiseConv3d, enabled
from .fastnorm import batchnorm_act

__all__ = ["build_model", "fold_batchnorm", "X3D"]


class _SqueezeExcite(nn.Module):
    """Channel attention: global pool, reduce, ReLU, expand, sigmoid gate."""

    def __init__(self, channels: int, ratio: float, fast: bool = False) -> None:
        super().__init__()
        reduced = round_width(channels, ratio)
        pointwise = PointwiseConv3d if fast else nn.Conv3d
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = pointwise(channels, reduced, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = pointwise(reduced, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def gate_of(self, pooled: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1, 1) gate of the (N, C, 1, 1, 1) pooled input."""
        return self.gate(self.fc2(self.relu(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_of(self.pool(x))


class _ConvNorm(nn.Sequential):
    """Convs, a BatchNorm and optionally its activation; the last two run through :func:`batchnorm_act`."""

    def __init__(self, *modules: nn.Module, fast: bool) -> None:
        super().__init__(*modules)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *convs, norm, act = self if isinstance(self[-1], (nn.ReLU, nn.SiLU)) else (*self, None)
        for conv in convs:
            x = conv(x)
        return batchnorm_act(x, norm, act, self.fast)


class _Block(nn.Module):
    """Bottleneck block: 1x1x1 reduce, channelwise 3x3x3 (+SE, Swish), 1x1x1 expand, residual."""

    def __init__(self, dim_in: int, dim_out: int, inner: int, spatial_stride: int,
                 se_ratio: float, fast: bool) -> None:
        super().__init__()
        self.fast = fast
        channelwise = ChannelwiseConv3d if fast else nn.Conv3d
        pointwise = PointwiseConv3d if fast else nn.Conv3d
        stride = (1, spatial_stride, spatial_stride)
        self.a = pointwise(dim_in, inner, 1, bias=False)
        self.a_bn = nn.BatchNorm3d(inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = channelwise(inner, inner, 3, stride=stride, padding=1, groups=inner, bias=False)
        self.b_bn = nn.BatchNorm3d(inner)
        self.se = _SqueezeExcite(inner, se_ratio, fast) if se_ratio > 0 else nn.Identity()
        self.b_act = nn.SiLU()
        self.c = pointwise(inner, dim_out, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(dim_out)
        nn.init.zeros_(self.c_bn.weight)
        if dim_in != dim_out or spatial_stride != 1:
            self.shortcut: nn.Module = _ConvNorm(
                nn.Conv3d(dim_in, dim_out, 1, stride=stride, bias=False), nn.BatchNorm3d(dim_out), fast=fast)
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = batchnorm_act(self.a(x), self.a_bn, self.a_relu, self.fast)
        se = None if isinstance(self.se, nn.Identity) else self.se
        y = batchnorm_act(self.b(y), self.b_bn, self.b_act, self.fast, se=se)
        return batchnorm_act(self.c(y), self.c_bn, self.relu, self.fast, residual=self.shortcut(x))


class X3D(nn.Module):
    """An X3D network; construct it with :func:`build_model`."""

    def __init__(self, config: X3DConfig, fast: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.channels_last = enabled(fast)
        fast = self.channels_last
        channelwise = ChannelwiseConv3d if fast else nn.Conv3d
        pointwise = PointwiseConv3d if fast else nn.Conv3d
        stem = round_width(config.stem_width, config.width)
        self.stem = _ConvNorm(
            nn.Conv3d(3, stem, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            channelwise(stem, stem, (5, 1, 1), padding=(2, 0, 0), groups=stem, bias=False),
            nn.BatchNorm3d(stem),
            nn.ReLU(inplace=True),
            fast=fast,
        )
        stages = []
        dim_in = stem
        for blocks, dim_out, inner in stage_layout(config):
            layers = []
            for i in range(blocks):
                se = config.se_ratio if i % 2 == 0 else 0.0
                layers.append(_Block(dim_in, dim_out, inner, 2 if i == 0 else 1, se, fast))
                dim_in = dim_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        conv5 = int(config.bottleneck * dim_in)
        self.conv5 = _ConvNorm(
            pointwise(dim_in, conv5, 1, bias=False), nn.BatchNorm3d(conv5), nn.ReLU(inplace=True), fast=fast)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.lin5 = pointwise(conv5, config.head_width, 1, bias=False)
        self.lin5_relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.head_width, config.num_classes)
        if self.channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes) for clips of shape (batch, 3, T, H, W), in any memory layout.

        With the fast conv, CPU input is laid out channels-last here, once, so that every layer
        runs in the layout its fast kernels need instead of converting back and forth.
        """
        if self.channels_last and x.device.type == "cpu" and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.conv5(self.stages(self.stem(x)))
        x = self.lin5_relu(self.lin5(self.pool(x))).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(config: X3DConfig, fast: bool | None = None) -> X3D:
    """Build the exact network the config describes (freshly initialised).

    ``fast`` picks :mod:`x3dsearch.fastconv`'s channelwise conv and :mod:`x3dsearch.fastnorm`'s fused
    BatchNorm (default: ``$X3DSEARCH_FAST_CONV``, on) and the channels-last memory layout they run in
    (weights, and CPU input in ``forward``); it changes speed only, not parameters, state dicts or
    results beyond float rounding.
    """
    return X3D(config, fast)


def fold_batchnorm(model: X3D) -> X3D:
    """An inference-only copy of ``model`` (eval mode) with every BatchNorm folded into the conv before it.

    Same logits as ``model.eval()`` up to float rounding, one pass over memory fewer per BatchNorm
    after a 1x1x1 conv (the channelwise conv adds its folded bias in a pass of its own); the copy
    must not be trained (its BatchNorms are gone). ``model`` is left as it was.
    """
    folded = copy.deepcopy(model).eval()
    pairs = [(folded.stem, "1", "2"), (folded.conv5, "0", "1")]
    for block in folded.modules():
        if isinstance(block, _Block):
            pairs += [(block, "a", "a_bn"), (block, "b", "b_bn"), (block, "c", "c_bn")]
            if isinstance(block.shortcut, nn.Sequential):
                pairs.append((block.shortcut, "0", "1"))
    for owner, conv, norm in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
        setattr(owner, norm, nn.Identity())
    if folded.channels_last:
        folded.to(memory_format=torch.channels_last_3d)
    return folded
