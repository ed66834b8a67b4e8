"""Evaluation pieces of the training loop: data loaders, precise BatchNorm and multi-view scoring.

Each is a function of a model and a dataset, so the single-process loop and a distributed
worker call the same code.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .model import X3D, fold_batchnorm
from .scores import Scores

__all__ = ["Feed", "precise_bn", "score_views", "evaluate_views"]

SEED_STRIDE = 1_000_003  # spreads (seed, epoch) pairs over distinct DataLoader seeds


@dataclass(frozen=True)
class Feed:
    """How clips reach the model: loader seeding and workers, device, memory layout, autocast."""

    seed: int
    num_workers: int
    device: torch.device
    channels_last: bool
    autocast: AbstractContextManager[Any]
    sampler: Any = None  # a callable (dataset, shuffle, generator) -> Sampler, e.g. a distributed one
    start_method: str | None = None  # how loader worker processes start; None: the platform's default

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, epoch: int) -> DataLoader:
        """A loader whose order and worker seeds depend only on (seed, epoch): resumable without its state.

        A ``sampler`` hook gets the loader's generator, seeded by (seed, epoch), to draw its order from.
        """
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
        sampler: Sampler | None = self.sampler(dataset, shuffle, generator) if self.sampler else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, generator=generator, num_workers=self.num_workers,
                          multiprocessing_context=self.start_method if self.num_workers > 0 else None,
                          persistent_workers=False, drop_last=False, pin_memory=self.device.type == "cuda")

    def to_device(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.device, non_blocking=True)
        return clips.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else clips


@torch.no_grad()
def precise_bn(model: nn.Module, train_set: Dataset, feed: Feed, batch_size: int, clips: int, epoch: int) -> None:
    """Replace BatchNorm running statistics by their exact average over ``clips`` training clips.

    Short runs move the weights faster than the running averages follow ("precise BN").
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    seen = 0
    for batch, _ in feed.loader(train_set, batch_size, True, epoch):
        with feed.autocast:
            model(feed.to_device(batch))
        seen += len(batch)
        if seen >= clips:
            break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.inference_mode()
def score_views(model: nn.Module, dataset: Dataset, feed: Feed, batch_size: int, views: int,
                split: str = "val") -> Scores:
    """Top-1/top-5, per class and per group, and the mean negative log-likelihood of the softmax averaged over
    each video's ``views`` views.

    Class names and groups come from the dataset (``class_names``, ``groups``; indices without them).
    An X3D network is evaluated as a copy with its BatchNorms folded into the convs (same logits up
    to rounding, fewer passes over memory); on CPU in batches of about twice ``batch_size`` clips
    (measured faster; without gradients a batch takes a fraction of a training batch's memory).
    """
    model.eval()
    core = getattr(model, "module", model)  # a DistributedDataParallel wrapper evaluates its module
    if isinstance(core, X3D):
        model = fold_batchnorm(core)
    batch = max(1, (2 if feed.device.type == "cpu" else 1) * batch_size // views)
    confusion: torch.Tensor | None = None
    top5_hits = 0
    nll = 0.0
    for clips, labels in feed.loader(dataset, batch, False, 0):
        if clips.dim() == 5:  # a dataset of single clips: one view per video
            clips = clips.unsqueeze(1)
        videos, n_views = clips.shape[:2]
        with feed.autocast:
            logits = model(feed.to_device(clips.flatten(0, 1)))
        probs = logits.float().softmax(dim=1).view(videos, n_views, -1).mean(dim=1).cpu()
        classes = probs.shape[1]
        if confusion is None:
            confusion = torch.zeros(classes, classes, dtype=torch.int64)
        top = probs.topk(min(5, classes), dim=1).indices
        confusion += torch.bincount(labels * classes + top[:, 0], minlength=classes * classes).view(classes, classes)
        top5_hits += int((top == labels[:, None]).any(dim=1).sum())
        nll -= float(probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum())
    if confusion is None:
        raise ValueError(f"the {split} split has no videos to score")
    names = list(getattr(dataset, "class_names", []))
    names += [str(i) for i in range(len(names), len(confusion))]
    return Scores.from_counts(split, confusion.tolist(), top5_hits, names[:len(confusion)],
                              getattr(dataset, "groups", None), nll / int(confusion.sum()))


def evaluate_views(model: nn.Module, val_set: Dataset, feed: Feed, batch_size: int,
                   views: int) -> tuple[float, float]:
    """Top-1/top-5 of the softmax averaged over each video's ``views`` views (see :func:`score_views`)."""
    scores = score_views(model, val_set, feed, batch_size, views)
    return scores.top1, scores.top5
