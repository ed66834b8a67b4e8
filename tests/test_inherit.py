"""Function-preserving expansion: every axis' child computes its parent's logits before training."""

from __future__ import annotations

import pytest
import torch

from x3dsearch.config import preset
from x3dsearch.errors import ConfigError
from x3dsearch.inherit import inherit
from x3dsearch.model import build_model
from x3dsearch.space import AXES, expand, load_space

# Small but complete: SE on even blocks, shortcuts, several blocks per stage, the stem and conv5.
PARENT = preset("X2D", num_classes=5, head_width=32, crop=32, frames=2, stage_blocks=(1, 2, 2, 1))


def _trained_looking(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with every BatchNorm non-trivial (fresh ones make blocks identities, which proves nothing)."""
    torch.manual_seed(seed)
    model = build_model(config, fast=False)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("bn.weight", "1.weight", "2.weight")) and value.dim() == 1:
            value.uniform_(0.5, 1.5)
        elif key.endswith(("bias", "running_mean")) and value.dim() == 1:
            value.normal_(0, 0.2)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    return state


def _logits(config, state, fast: bool, clip: torch.Tensor) -> torch.Tensor:
    model = build_model(config, fast=fast)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(clip.contiguous(memory_format=torch.channels_last_3d) if fast else clip)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("axis", ["depth", "width", "bottleneck"])
def test_widened_and_deepened_children_compute_the_parent_function(axis: str, fast: bool) -> None:
    child = expand(PARENT, axis, space=load_space())
    parent_state = _trained_looking(PARENT)
    state = inherit(parent_state, PARENT, child, noise=0.0, seed=1)
    clip = torch.randn(3, 3, PARENT.frames, 32, 32)
    expected = _logits(PARENT, parent_state, fast, clip)
    got = _logits(child, state, fast, clip)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert sum(v.numel() for v in state.values()) > sum(v.numel() for v in parent_state.values())


@pytest.mark.parametrize("axis", ["fast", "temporal", "spatial"])
def test_input_axes_reuse_every_weight_unchanged(axis: str) -> None:
    child = expand(PARENT, axis, space=load_space())
    parent_state = _trained_looking(PARENT)
    state = inherit(parent_state, PARENT, child, noise=0.1)
    assert state.keys() == parent_state.keys()
    for key, value in parent_state.items():
        assert torch.equal(state[key], value), key


def test_all_axes_at_once_and_partial_steps_preserve_the_function() -> None:
    space = load_space()
    child = PARENT
    for axis in AXES:
        child = expand(child, axis, fraction=0.6, space=space)
    parent_state = _trained_looking(PARENT, seed=3)
    state = inherit(parent_state, PARENT, child, noise=0.0)
    clip = torch.randn(2, 3, PARENT.frames, 32, 32)
    torch.testing.assert_close(_logits(child, state, False, clip), _logits(PARENT, parent_state, False, clip),
                               rtol=1e-4, atol=1e-4)


def test_noise_breaks_replica_symmetry_but_stays_close() -> None:
    child = expand(PARENT, "width", space=load_space())
    parent_state = _trained_looking(PARENT)
    exact = inherit(parent_state, PARENT, child, noise=0.0)
    noisy = inherit(parent_state, PARENT, child, noise=0.01)
    key = "stages.1.0.a.weight"
    assert not torch.equal(exact[key], noisy[key])
    assert (exact[key] - noisy[key]).abs().max() < 0.1 * exact[key].abs().max()
    assert torch.equal(inherit(parent_state, PARENT, child, seed=5)[key],
                       inherit(parent_state, PARENT, child, seed=5)[key])


def test_refuses_what_is_not_an_expansion() -> None:
    state = _trained_looking(PARENT)
    with pytest.raises(ConfigError, match="num_classes"):
        inherit(state, PARENT, PARENT.replace(num_classes=7))
    with pytest.raises(ConfigError, match="narrower"):
        inherit(state, PARENT.replace(width=2.0), PARENT)
    with pytest.raises(ConfigError, match="shallower"):
        inherit(_trained_looking(PARENT.replace(depth=2.2)), PARENT.replace(depth=2.2), PARENT)
