"""Where a full training runs: :class:`WorkerOptions` (one worker: this process; more: Ray Train workers)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerOptions"]


@dataclass(frozen=True)
class WorkerOptions:
    """How many workers train and where: ``address=None`` starts a local Ray on this machine."""

    workers: int = 2
    address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    storage: str | None = None
    max_failures: int = 2
