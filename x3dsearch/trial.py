"""The trial contract shared by runner, proxy and dispatch: what a proxy trial is asked (:class:`TrialJob`), how
its weights started (:class:`Init`), how it ended (:class:`Status`) and the journal line it leaves
(:class:`TrialRecord`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

__all__ = ["Status", "SPENT", "Init", "TrialJob", "TrialRecord"]


class Status(StrEnum):
    """How a trial attempt (or a candidate the search never trained) ended, as the journal spells it."""

    OK = "ok"
    DIVERGED = "diverged"
    FAILED = "failed"
    RETRIED = "retried"  # the worker died and Ray Tune runs the trial again
    SKIPPED = "skipped"  # above the ceiling: never trained

    @property
    def final(self) -> bool:
        """Whether the attempt ran to its end (not a lost worker, not skipped): its seconds were spent."""
        return self in SPENT


SPENT = (Status.OK, Status.DIVERGED, Status.FAILED)  # attempts that ran to their end (not lost workers)


class Init(StrEnum):
    """Where a trial's weights started: ``inherit``/``scratch`` are also the ``--proxy-init`` modes."""

    INHERIT = "inherit"
    SCRATCH = "scratch"
    FALLBACK = "scratch: parent weights missing"  # inheriting, but the parent's weights were not there

    @property
    def from_scratch(self) -> bool:
        return self is not Init.INHERIT


@dataclass(frozen=True)
class TrialJob:
    """One proxy training: ``config`` trained with ``recipe`` on ``data``; with ``stop_epochs`` it pauses there
    (a rung, continued by a later job), ``seed_offset`` > 0 repeats it with another seed."""

    key: str
    config: dict[str, Any]
    recipe: dict[str, Any]
    data: str
    seed: int
    init: Init = Init.SCRATCH
    parent: dict[str, Any] | None = None
    weights_dir: str | None = None
    trials_dir: str | None = None
    stop_epochs: int | None = None
    seed_offset: int = 0
    cpus: float = 1.0


@dataclass(frozen=True)
class TrialRecord:
    """One journal line: the candidate, how its attempt ended and every metric the trial reported (``metrics``)."""

    config_key: str
    config: dict[str, Any]
    step: int
    axis: str
    kind: str
    fraction: float
    gflops: float
    params: int
    parent_key: str | None
    status: Status
    top1: float | None = None
    top5: float | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None  # this attempt's CPU time (process and reaped children); None before 2026-12-06
    node: str | None = None
    attempt: int = 1
    reason: str = ""
    init: str | None = None
    rung: int | None = None
    seed_offset: int = 0
    started: float | None = None
    ended: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The journal line's mapping, keys in this order."""
        return dict(dataclasses.asdict(self), status=str(self.status))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialRecord":
        """A journal line of any version (fields it lacks take their defaults; unknown ones are dropped)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**dict(values, status=Status(values["status"])))
