"""Shared fixtures: keep torch to one thread so tests behave the same on any box."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def fused_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests' tiny batches sit below the fused BatchNorm's size gate: let the kernel take them."""
    monkeypatch.setattr("x3dsearch.fastnorm._MIN_ELEMENTS", 0)
