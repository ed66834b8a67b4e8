"""Fault injection for tests, in one place: a worker that dies once, a Ray Train rank that dies once after its
first checkpoint, and a loss that turns NaN at a given step."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["KILL_ONCE_ENV", "KILL_WORKER_ONCE_ENV", "kill_once", "rank_kill_marker", "kill_rank_once", "nan_loss_at",
           "nan_loss_now"]

KILL_ONCE_ENV = "X3DSEARCH_DEBUG_KILL_ONCE"  # a marker file path: the next proxy trial to find it missing dies
KILL_WORKER_ONCE_ENV = "X3DSEARCH_DEBUG_KILL_WORKER_ONCE"  # a marker file path: the last DDP rank dies once
_nan_step: int | None = None


def kill_once() -> None:
    """SIGKILL this process if the kill-once marker is armed (named in the environment but absent); it is
    written first with this pid, so the retry lives."""
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def rank_kill_marker() -> str | None:
    """The marker file of the distributed kill-once hook, if the environment sets one (read in the driver)."""
    return os.environ.get(KILL_WORKER_ONCE_ENV)


def kill_rank_once(marker: str | None, rank: int, world_size: int) -> Callable[[int, Mapping[str, Any]], None] | None:
    """An epoch callback by which the last rank SIGKILLs itself after its first checkpoint, once per ``marker``.

    The marker gets the pid that died, then the number of every epoch its replacement trains.
    """
    if not marker or rank != world_size - 1:
        return None

    def die(epoch: int, metrics: Mapping[str, Any]) -> None:
        import ray.train

        path = Path(marker)
        if path.exists():
            with path.open("a") as log:
                log.write(f" {epoch}")
            return
        ray.train.get_all_reported_checkpoints()  # Ray Train has registered the checkpoint just reported
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return die


@contextmanager
def nan_loss_at(step: int) -> Iterator[None]:
    """Within the block, trainings in this process get a NaN loss at global step ``step``."""
    global _nan_step
    before, _nan_step = _nan_step, step
    try:
        yield
    finally:
        _nan_step = before


def nan_loss_now(step: int) -> bool:
    """Whether a training at global step ``step`` should make its loss NaN (:func:`nan_loss_at`)."""
    return _nan_step is not None and step == _nan_step
