"""One entry to a full training: :func:`fit` trains alone in this process, or data-parallel on Ray Train
workers (:mod:`x3dsearch.distributed`) when its :class:`~x3dsearch.workers.WorkerOptions` ask for more than one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .workers import WorkerOptions

if TYPE_CHECKING:
    import torch

    from .config import X3DConfig
    from .recipe import Recipe
    from .train import TrainResult

__all__ = ["fit"]


def fit(config: "X3DConfig", data: str | Path, recipe: "Recipe", seed: int, *, out_dir: Path, workers: WorkerOptions,
        init_state: "Mapping[str, torch.Tensor] | None" = None, progress: bool = False,
        test_split: bool = False) -> "TrainResult":
    """Train ``config`` with ``recipe`` into ``out_dir``, resuming from its checkpoint: alone for one worker,
    else on ``workers.workers`` Ray Train workers."""
    if workers.workers > 1:
        from .distributed import train_distributed

        return train_distributed(config, data, recipe, seed, out_dir=out_dir, options=workers, init_state=init_state,
                                 progress=progress, test_split=test_split)
    from .train import train

    return train(config, data, recipe, seed=seed, out_dir=out_dir, resume=True, progress=progress,
                 init_state=init_state, test_split=test_split)
