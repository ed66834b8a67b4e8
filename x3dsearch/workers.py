"""Where trainings run: :class:`DispatchOptions` (the proxy trials, as Ray Tune trials) and :class:`WorkerOptions`
(a full training: one worker is this process; more are Ray Train workers)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DispatchOptions", "WorkerOptions"]


@dataclass(frozen=True)
class WorkerOptions:
    """How many workers train and where: ``address=None`` starts a local Ray on this machine."""

    workers: int = 2
    address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    storage: str | None = None
    max_failures: int = 2


@dataclass(frozen=True)
class DispatchOptions:
    """Where and how trials run; ``address=None`` starts a local Ray on this machine."""

    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    storage: str | None = None
    max_failures: int = 2
    num_cpus: int | None = None
