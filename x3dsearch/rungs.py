"""Multi-fidelity inside a search step: successive halving over rungs, and seed repeats for close calls.

Pure logic the coordinator calls; the trainings behind ``score_at`` are someone else's business.
Every candidate of a step trains to the first rung (a number of epochs of the proxy schedule) and
is scored; the best ``keep`` fraction continues to the next rung, from where it stopped, and so on.
The compute clear losers do not spend trains the contenders longer. When the best two at the
last rung are closer than ``close_call`` (the measured noise of a score), both are trained again
with other seeds and ranked by their mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from .errors import ConfigError
from .search import Candidate, Outcome, ScoreFn

__all__ = ["Rungs", "RungScoreFn", "successive_halving", "halving_scorer"]

# (candidates, epochs to reach, seed offset) -> outcomes by config key
RungScoreFn = Callable[[Sequence[Candidate], int, int], Mapping[str, Outcome]]


@dataclass(frozen=True)
class Rungs:
    """Cumulative epochs at each rung, the fraction promoted, and the close-call margin and repeats."""

    epochs: tuple[int, ...]
    keep: float = 0.5
    close_call: float = 0.0  # margin of the ranked measure under which the best two are re-trained with other seeds
    repeats: int = 0  # extra seeds for a close call

    def __post_init__(self) -> None:
        epochs = tuple(self.epochs)
        if not epochs or any(e < 1 for e in epochs) or list(epochs) != sorted(set(epochs)):
            raise ConfigError(f"rungs must be increasing positive epoch counts, got {list(epochs)}")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"rung keep fraction must be in (0, 1], got {self.keep}")
        if self.close_call < 0 or self.repeats < 0:
            raise ConfigError("close_call and repeats must not be negative")
        object.__setattr__(self, "epochs", epochs)

    def promoted(self, alive: int) -> int:
        """How many of ``alive`` scored candidates continue to the next rung (at least one)."""
        return max(1, math.ceil(alive * self.keep))


def _ranked(candidates: Sequence[Candidate], outcomes: Mapping[str, Outcome]) -> list[Candidate]:
    usable = [c for c in candidates if outcomes[c.key].usable]
    return sorted(usable, key=lambda c: -outcomes[c.key].rank)  # stable: earlier axes win ties


def successive_halving(candidates: Sequence[Candidate], score_at: RungScoreFn, rungs: Rungs) -> dict[str, Outcome]:
    """Every candidate's outcome at the last rung it reached (``Outcome.epochs`` says which)."""
    result: dict[str, Outcome] = {}
    alive = list(candidates)
    for i, epochs in enumerate(rungs.epochs):
        answers = score_at(alive, epochs, 0)
        for c in alive:
            result[c.key] = replace(answers.get(c.key, Outcome("failed", reason="no result returned")), epochs=epochs)
        if i + 1 < len(rungs.epochs):
            ranked = _ranked(alive, result)
            alive = ranked[:rungs.promoted(len(ranked))]
            if not alive:
                break
    _settle_close_call(alive, result, score_at, rungs)
    return result


def _settle_close_call(finalists: Sequence[Candidate], result: dict[str, Outcome], score_at: RungScoreFn,
                       rungs: Rungs) -> None:
    """Re-train the best two with other seeds when their ranks are within ``close_call``; rank by the means."""
    ranked = _ranked(finalists, result)
    if rungs.repeats < 1 or len(ranked) < 2:
        return
    best, second = ranked[:2]
    if result[best.key].rank - result[second.key].rank >= rungs.close_call:
        return
    runs = {c.key: [result[c.key]] for c in (best, second)}
    for offset in range(1, rungs.repeats + 1):
        answers = score_at([best, second], rungs.epochs[-1], offset)
        for c in (best, second):
            if answers.get(c.key) is not None and answers[c.key].usable:
                runs[c.key].append(answers[c.key])
    for c in (best, second):
        outcomes = runs[c.key]
        top1 = sum(o.top1 for o in outcomes) / len(outcomes)
        score = None if result[c.key].score is None else sum(o.rank for o in outcomes) / len(outcomes)
        result[c.key] = replace(result[c.key], top1=top1, score=score, seeds=len(outcomes))


def halving_scorer(score_at: RungScoreFn, rungs: Rungs) -> ScoreFn:
    """A coordinator score function that runs successive halving over each batch it is given."""
    return lambda candidates: successive_halving(candidates, score_at, rungs)
