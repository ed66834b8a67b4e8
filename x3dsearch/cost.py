"""The cost model C(X): closed-form multiply-adds and parameters of a config, and the cost a search spends.

Counts one multiply-add as one FLOP over conv and linear layers for one clip at the
config's own input size (BatchNorm folds into the conv at inference and is excluded),
which is what fvcore's conv+linear count gives on :func:`x3dsearch.build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .config import X3DConfig, round_width, stage_layout

__all__ = ["count_flops", "count_params", "cost_breakdown", "channelwise_flops", "Cost", "FlopCost", "FLOPS"]


def _out(size: int, stride: int) -> int:
    """Output side of a kernel-3, padding-1 conv (stride 1 keeps the size)."""
    return (size - 1) // stride + 1


def _parts(config: X3DConfig, frames: int | None, crop: int | None) -> dict[str, tuple[int, int, int]]:
    """(multiply-adds, of which channelwise, parameters) per part at the given input size."""
    t = config.frames if frames is None else frames
    side = config.crop if crop is None else crop
    stem = round_width(config.stem_width, config.width)
    side = _out(side, 2)
    parts: dict[str, tuple[int, int, int]] = {
        "stem": (t * side * side * stem * (27 + 5), t * side * side * stem * 5, stem * (27 + 5 + 2)),
    }
    dim_in = stem
    for index, (blocks, dim_out, inner) in enumerate(stage_layout(config)):
        macs = channelwise = params = 0
        for i in range(blocks):
            stride = 2 if i == 0 else 1
            out_side = _out(side, stride)
            hw_in, hw_out = t * side * side, t * out_side * out_side
            macs += hw_in * dim_in * inner + hw_out * inner * (27 + dim_out)
            channelwise += hw_out * inner * 27
            params += dim_in * inner + inner * (2 + 27 + 2) + inner * dim_out + 2 * dim_out
            if i % 2 == 0 and config.se_ratio > 0:
                reduced = round_width(inner, config.se_ratio)
                macs += 2 * inner * reduced
                params += 2 * inner * reduced + reduced + inner
            if dim_in != dim_out or stride != 1:
                macs += hw_out * dim_in * dim_out
                params += dim_in * dim_out + 2 * dim_out
            dim_in, side = dim_out, out_side
        parts[f"res{index + 2}"] = (macs, channelwise, params)
    conv5 = int(config.bottleneck * dim_in)
    head, classes = config.head_width, config.num_classes
    parts["head"] = (
        t * side * side * dim_in * conv5 + conv5 * head + head * classes, 0,
        dim_in * conv5 + 2 * conv5 + conv5 * head + head * classes + classes,
    )
    return parts


def cost_breakdown(config: X3DConfig, frames: int | None = None,
                   crop: int | None = None) -> dict[str, tuple[int, int]]:
    """(multiply-adds, parameters) per part: ``stem``, ``res2``..``res5``, ``head``.

    ``frames``/``crop`` override the input size (default: the config's own).
    """
    return {name: (macs, params) for name, (macs, _, params) in _parts(config, frames, crop).items()}


def channelwise_flops(config: X3DConfig) -> int:
    """The share of :func:`count_flops` in channelwise convs: few FLOPs, but slow ones on most devices."""
    return sum(channelwise for _, channelwise, _ in _parts(config, None, None).values())


def count_flops(config: X3DConfig, frames: int | None = None, crop: int | None = None) -> int:
    """Multiply-adds of one clip (conv + linear), equal to fvcore's conv+linear count."""
    return sum(macs for macs, _ in cost_breakdown(config, frames, crop).values())


def count_params(config: X3DConfig) -> int:
    """Number of parameters of ``build_model(config)`` (independent of the input size)."""
    return sum(params for _, params in cost_breakdown(config).values())


class Cost(Protocol):
    """C(X) as a search spends it: ``of`` in base units (FLOPs, or ms), ``per_unit`` of them per shown ``unit``.

    ``estimate`` is what the cost says without measuring (for FLOPs the same), for checks made before a run.
    """

    name: str
    unit: str
    per_unit: float

    def of(self, config: X3DConfig) -> float: ...

    def estimate(self, config: X3DConfig) -> float: ...


@dataclass(frozen=True)
class FlopCost:
    """The default cost: exact multiply-adds per clip (:func:`count_flops`), shown in GFLOPs."""

    name: str = "flops"
    unit: str = "GFLOPs"
    per_unit: float = 1e9

    def of(self, config: X3DConfig) -> float:
        return count_flops(config)

    def estimate(self, config: X3DConfig) -> float:
        return count_flops(config)


FLOPS = FlopCost()
