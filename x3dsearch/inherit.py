"""Function-preserving expansion: a child network that starts out computing its parent's function.

Weight inheritance lets each candidate of a search step continue from its parent's trained
weights instead of from scratch (as Net2Net and network-transformation NAS do). X3D is fully
convolutional, so the fast, temporal and spatial axes reuse every weight unchanged. A depth step
appends blocks at the end of each stage; their last BatchNorm starts at zero, so they are
identities. Width and bottleneck steps widen channels Net2WiderNet-style: a new channel replicates
an existing one, and every layer that reads replicated channels divides their weights by the
replica count, so the sums it computes are unchanged. BatchNorm, squeeze-excitation, shortcuts,
the stem, conv5 and the head are widened consistently. ``noise`` (relative to each tensor's spread)
breaks the symmetry between replicas; with ``noise=0`` the logits are those of the parent.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .config import X3DConfig, round_width, stage_layout
from .errors import ConfigError
from .model import build_model

__all__ = ["inherit", "INHERIT_NOISE"]

INHERIT_NOISE = 0.01  # default symmetry-breaking noise, relative to each widened tensor's std
_FIXED = ("num_classes", "stem_width", "stage_blocks", "head_width", "se_ratio")


def _widths(config: X3DConfig) -> dict[str, int]:
    """Channel count of every channel space: the stem, each stage's stream, inner, SE and conv5 widths."""
    out = {"stem": round_width(config.stem_width, config.width)}
    for s, (_, width, inner) in enumerate(stage_layout(config)):
        out[f"s{s}"], out[f"s{s}.inner"] = width, inner
        out[f"s{s}.se"] = round_width(inner, config.se_ratio)
    out["conv5"] = int(config.bottleneck * out[f"s{len(config.stage_blocks) - 1}"])
    return out


def _layers(config: X3DConfig, blocks: list[int]) -> dict[str, tuple[str | None, str | None]]:
    """Parameter prefix -> (output channel space, input channel space) for the first ``blocks`` per stage.

    Channelwise convs and BatchNorm only have an output space; ``None`` marks a fixed dimension.
    """
    layers: dict[str, tuple[str | None, str | None]] = {
        "stem.0": ("stem", None), "stem.1": ("stem", None), "stem.2": ("stem", None)}
    stream = "stem"
    for s, count in enumerate(blocks):
        for b in range(count):
            p, inner = f"stages.{s}.{b}", f"s{s}.inner"
            layers.update({f"{p}.a": (inner, stream), f"{p}.a_bn": (inner, None), f"{p}.b": (inner, None),
                           f"{p}.b_bn": (inner, None), f"{p}.se.fc1": (f"s{s}.se", inner),
                           f"{p}.se.fc2": (inner, f"s{s}.se"), f"{p}.c": (f"s{s}", inner),
                           f"{p}.c_bn": (f"s{s}", None), f"{p}.shortcut.0": (f"s{s}", stream),
                           f"{p}.shortcut.1": (f"s{s}", None)})
            stream = f"s{s}"
    layers.update({"conv5.0": ("conv5", stream), "conv5.1": ("conv5", None), "lin5": (None, "conv5"),
                   "classifier": (None, None)})
    return layers


def _replication(old: int, new: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Net2Wider index map (new channel -> old channel it copies) and the replica count of each old channel."""
    if new < old:
        raise ConfigError(f"cannot inherit into a narrower network ({old} -> {new} channels)")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    index = torch.cat([torch.arange(old), extra])
    return index, torch.bincount(index, minlength=old).to(torch.float32)


def _check(parent: X3DConfig, child: X3DConfig) -> list[int]:
    """Blocks per stage the child shares with the parent; refuses children that are not expansions."""
    for name in _FIXED:
        if getattr(parent, name) != getattr(child, name):
            raise ConfigError(f"cannot inherit across a change of {name}")
    parent_blocks = [b for b, _, _ in stage_layout(parent)]
    if any(p > c for p, (c, _, _) in zip(parent_blocks, stage_layout(child))):
        raise ConfigError("cannot inherit into a shallower network")
    return parent_blocks


def inherit(parent_state: Mapping[str, torch.Tensor], parent: X3DConfig, child: X3DConfig, *,
            noise: float = INHERIT_NOISE, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict for ``build_model(child)`` that computes what ``parent_state`` computes for ``parent``.

    ``child`` must be ``parent`` expanded along any of the six axes (each at least as large).
    Blocks the parent lacks keep the child's fresh initialisation (identity blocks); ``seed`` fixes
    which channels are replicated and the symmetry-breaking noise.
    """
    blocks = _check(parent, child)
    generator = torch.Generator().manual_seed(seed)
    old, new = _widths(parent), _widths(child)
    maps = {space: _replication(old[space], new[space], generator) for space in old}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = {k: v.detach().clone() for k, v in build_model(child, fast=False).state_dict().items()}
    for prefix, (out_space, in_space) in _layers(parent, blocks).items():
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"{prefix}.{name}"
            if key not in parent_state:
                continue
            value = parent_state[key].detach().to("cpu", torch.float32 if parent_state[key].is_floating_point()
                                                  else parent_state[key].dtype)
            if out_space is not None and value.dim() >= 1:
                value = value[maps[out_space][0]]
            if in_space is not None and value.dim() >= 2:
                index, counts = maps[in_space]
                scale = (1.0 / counts[index]).view(1, -1, *([1] * (value.dim() - 2)))
                value = value[:, index] * scale
            if noise and value.dim() >= 2 and value.shape != parent_state[key].shape:
                value = value + noise * value.std() * torch.randn(value.shape, generator=generator)
            state[key] = value.contiguous()
    return state
