"""The search coordinator: forward expansion and backward contraction as pure logic.

The coordinator decides; it never trains. It asks a ``score`` callback for the proxy
accuracy of a batch of candidates (dispatch runs them, e.g. on Ray) and remembers every
answer by the config's canonical key, so no configuration is scored twice. Because it
is deterministic given the scores, replaying it against a journal of finished trials
resumes an interrupted search on exactly the same path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

from .config import X3DConfig
from .cost import FLOPS, Cost, count_flops, count_params
from .errors import ConfigError, SearchError
from .space import DISCRETE_FIELDS, SearchSpace, bounded_step, box_top, crossed_bound, expand, window

__all__ = ["Candidate", "Outcome", "Step", "Contraction", "SearchResult", "ScoreFn", "Ties",
           "offer", "step_candidates", "check_reachable", "choose", "longer_window_over", "contract", "run_search",
           "estimate_steps", "CEILING_FACTOR",
           "LANDING_TOLERANCE", "LAND_WITHIN", "check_land_within", "land", "memoised", "score_start", "take_step"]

LANDING_TOLERANCE = 0.05  # contraction lands within 5% of the target, topping up if it must
LAND_WITHIN = math.sqrt(2)  # default of expand: closer than this under the target, land instead of a full step
CEILING_FACTOR = 2.0  # default ceiling: a candidate above 2x the target would lose over half its step


@dataclass(frozen=True)
class Candidate:
    """A config proposed at a step by one axis, with its analytic cost."""

    step: int
    axis: str
    config: X3DConfig
    kind: str = "expand"  # "expand", "contract", "land", "start", or "lookahead" (the runner-up's next step)
    fraction: float = 1.0
    parent: X3DConfig | None = None  # the config it was expanded from (whose weights it may inherit)
    bound: str = ""  # the bound of the space's box that made a step partial, e.g. "frames <= 16"

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def gflops(self) -> float:
        return count_flops(self.config) / 1e9

    @property
    def params(self) -> int:
        return count_params(self.config)


@dataclass(frozen=True)
class Outcome:
    """What a proxy training said about a config: ``ok`` with an accuracy, or why not; a search ranks by
    :attr:`rank`, the top-1 unless ``score`` holds another measure (higher is better)."""

    status: str  # "ok", "diverged", "failed", "skipped"
    top1: float | None = None
    reason: str = ""
    epochs: int | None = None  # the rung (epochs trained) the score was taken at, when rungs are used
    seeds: int = 1  # how many seeds the score averages (close calls are repeated)
    score: float | None = None  # the ranked measure when not top-1 (minus the val NLL under rank_by: nll)

    @property
    def rank(self) -> float | None:
        """What candidates are ranked by: ``score`` when set, else ``top1``."""
        return self.top1 if self.score is None else self.score

    @property
    def usable(self) -> bool:
        return (self.status == "ok" and self.top1 is not None and not math.isnan(self.top1)
                and not math.isnan(self.rank))


ScoreFn = Callable[[Sequence[Candidate]], Mapping[str, Outcome]]


@dataclass(frozen=True)
class Step:
    """One forward-expansion step: every candidate with its outcome, and the winner."""

    index: int
    base: X3DConfig
    candidates: tuple[Candidate, ...]
    outcomes: Mapping[str, Outcome]
    chosen: Candidate
    notes: Mapping[str, str] = field(default_factory=dict)  # per axis: partial up to a bound, none, or a duplicate
    lookahead: str = ""  # what a look one step ahead showed (run_search's lookahead), empty when none was taken
    replaced: Candidate | None = None  # the step's own winner, when the look kept the runner-up instead


@dataclass(frozen=True)
class Contraction:
    """The partial step that lands the path on the target: back from an overshooting last step, or on
    from just under the target (``run_search``'s ``land_within``)."""

    axis: str
    fraction: float
    config: X3DConfig
    gflops: float
    target: float  # in the search cost's unit (GFLOPs by default)
    evaluated: Mapping[str, Outcome] = field(default_factory=dict)
    base: X3DConfig | None = None  # the config the partial step starts from
    kind: str = "contract"  # "contract": back from a full step past the target; "land": on from under it


@dataclass(frozen=True)
class SearchResult:
    """The expansion path, the optional contraction, and the chosen final config."""

    start: X3DConfig
    steps: tuple[Step, ...]
    contraction: Contraction | None
    final: X3DConfig
    target: float  # in the unit of ``cost``
    cost: Cost = FLOPS

    @property
    def origin(self) -> X3DConfig:
        """The trained config nearest the final one: itself if its proxy trained, else its partial step's base."""
        c = self.contraction
        if c is None or (c.config.key in c.evaluated and c.evaluated[c.config.key].usable):
            return self.final
        return c.base

    @property
    def final_gflops(self) -> float:
        return count_flops(self.final) / 1e9


def offer(base: X3DConfig, space: SearchSpace, step: int) -> tuple[list[Candidate], dict[str, str]]:
    """One step per axis inside the space's box, and a note per axis whose step is partial, absent or a duplicate.

    A step that would cross a bound is cut to it (``x0.62 up to frames <= 16``); an axis at its bound is
    not offered; an axis whose step gives an earlier axis' config is left out and named (``same config as fast``).
    """
    seen: dict[str, str] = {base.key: ""}
    out, notes = [], {}
    for axis in space.axes:
        config, fraction, bound = bounded_step(base, axis, space)
        if fraction == 0:
            notes[axis] = f"not offered: at its bound ({bound})" if bound else "not offered: its step rounds to no change"
        elif config.key in seen:
            notes[axis] = f"same config as {seen[config.key]}"
        else:
            seen[config.key] = axis
            out.append(Candidate(step, axis, config, fraction=fraction, parent=base, bound=bound))
            if bound:
                notes[axis] = f"x{fraction:.3g} up to {bound}"
    return out, notes


def step_candidates(base: X3DConfig, space: SearchSpace, step: int) -> list[Candidate]:
    """The candidates of :func:`offer`: one step per axis inside the box, duplicates left out."""
    return offer(base, space, step)[0]


def check_reachable(space: SearchSpace, target: float, cost: Cost = FLOPS) -> None:
    """A one-line SearchError when stepping every axis up to the box's bounds stays under the target
    (in ``cost``'s unit, judged by its estimate), or when a multi-frame start's own window is over the box's limit
    (a one-frame start spans one frame whatever its stride)."""
    if space.max_window is not None and space.start.frames > 1 and window(space.start) > space.max_window:
        raise SearchError(f"the start {space.start.short} spans {window(space.start)} source frames (frames x "
                          f"stride), over the window limit of {space.max_window:g}: raise --max-window (or the "
                          f"space's max_window), or start from a shorter window")
    top = box_top(space, target * cost.per_unit, cost.estimate)
    if cost.estimate(top) < target * cost.per_unit:
        raise SearchError(f"target {target:g} {cost.unit} is out of reach: expansion inside the box of "
                          f"{space.name} tops out at {cost.estimate(top) / cost.per_unit:.4g} {cost.unit} "
                          f"({top.short}); widen its bounds or --max-window, or lower the target")


@dataclass(frozen=True)
class Ties:
    """How :func:`choose` breaks near-ties: ``within`` (a proxy policy's ``fewer_params_within``) and
    ``longer_window`` (its ``longer_window_ties``); :func:`choose` says what each does."""

    within: float = 0.0
    longer_window: bool = False


def choose(candidates: Sequence[Candidate], outcomes: Mapping[str, Outcome], cost: Cost = FLOPS,
           ties: Ties = Ties()) -> Candidate | None:
    """Highest proxy rank (top-1 by default) at the highest rung reached; ties go to the cheaper config, then the
    earlier axis. With ``ties.within`` every candidate ranked within it of the best is tied, and the one
    with the fewest parameters wins (then the higher rank): the short proxy cannot see what parameters cost a
    longer training. With ``ties.longer_window`` a tied candidate loses to a tied one that beats it by
    :func:`longer_window_over` (X-Temporal over X-Fast): frames spent on a short window cannot lengthen it later."""
    usable = [c for c in candidates if outcomes.get(c.key, Outcome("missing")).usable]
    if not usable:
        return None
    order = {id(c): i for i, c in enumerate(candidates)}
    best = min(usable, key=lambda c: (-(outcomes[c.key].epochs or 0), -outcomes[c.key].rank,
                                      cost.of(c.config), order[id(c)]))
    if ties.within <= 0:
        return best
    floor = outcomes[best.key].rank - ties.within - 1e-9  # "within" includes the margin, whatever the rounding
    tied = [c for c in usable if (outcomes[c.key].epochs or 0) == (outcomes[best.key].epochs or 0)
            and outcomes[c.key].rank >= floor]
    if ties.longer_window:
        tied = [c for c in tied if not any(longer_window_over(o, c) for o in tied)]
    return min(tied, key=lambda c: (c.params, -outcomes[c.key].rank, cost.of(c.config), order[id(c)]))


def longer_window_over(winner: Candidate, loser: Candidate) -> bool:
    """Whether ``winner`` beats ``loser`` by the window rule: both change the frames of their parent, with the same
    parameters, and ``winner`` spans the longer window (frames x stride)."""
    def moves_frames(c: Candidate) -> bool:
        return c.parent is not None and c.config.frames != c.parent.frames
    return (moves_frames(winner) and moves_frames(loser) and winner.params == loser.params
            and window(winner.config) > window(loser.config))


def _bracket(base: X3DConfig, axis: str, target_flops: float, space: SearchSpace, cost: Cost,
             iterations: int = 40) -> tuple[tuple[X3DConfig, float] | None, tuple[X3DConfig, float]]:
    """The partial steps of ``axis`` just at/under and just over the target: ((config, fraction) or None, ...).

    None under when no partial step adds cost under the target. Bisection on the step fraction (cost is monotone in it) inside the space's box: a config that
    leaves it counts as over. Discrete fields round, so the two sides can be far apart; when the
    box stops the axis under the target, the "over" side is that last step (or ``base`` at fraction 0).
    """
    top, reach, _ = bounded_step(base, axis, space)
    lo, hi = 0.0, reach
    under: tuple[X3DConfig, float] | None = None
    above: tuple[X3DConfig, float] = (top, reach)
    for _ in range(iterations if reach > 0 else 0):
        mid = (lo + hi) / 2
        config = expand(base, axis, fraction=mid, space=space)
        flops = cost.of(config)
        if flops <= target_flops and crossed_bound(base, config, space) is None:
            lo = mid
            under = (config, mid) if flops > cost.of(base) else under  # a step that adds no cost is none
        else:
            hi, above = mid, (config, mid)
    return under, above


def _closest(under: tuple[X3DConfig, float] | None, above: tuple[X3DConfig, float],
             target_flops: float, cost: Cost) -> tuple[X3DConfig, float]:
    if under is None or abs(cost.of(above[0]) - target_flops) < abs(target_flops - cost.of(under[0])):
        return above
    return under


def contract(base: X3DConfig, axis: str, target_flops: float, space: SearchSpace,
             iterations: int = 40, cost: Cost = FLOPS) -> tuple[X3DConfig, float]:
    """Partial step of ``axis`` from ``base`` whose cost is closest to ``target_flops`` (in ``cost.of``'s base
    units): (config, fraction)."""
    return _closest(*_bracket(base, axis, target_flops, space, cost, iterations), target_flops, cost)


def land(base: X3DConfig, axis: str, target_flops: float, space: SearchSpace,
         tolerance: float = LANDING_TOLERANCE, cost: Cost = FLOPS) -> tuple[X3DConfig, str, float]:
    """Contract ``axis`` onto the target; if rounding or a bound misses it by more than ``tolerance``, top up.

    Frames and crop change the cost in jumps (feature maps halve with rounding at every stride-2
    stage), and a bound can stop an axis short, so the closest partial step of such an axis can be
    far off. Then the step stops at or under the target and the continuous axis that lands closest
    (e.g. bottleneck) fills the rest. Returns the config, the axis label (``"spatial+bottleneck"``
    when topped up, the filling axis alone when ``axis`` could not move) and the first axis' step fraction.
    """
    under, above = _bracket(base, axis, target_flops, space, cost)
    if under is None and cost.of(above[0]) <= target_flops:
        under = above  # the box stops the axis under the target
    config, fraction = _closest(under, above, target_flops, cost)
    if abs(cost.of(config) - target_flops) <= tolerance * target_flops:
        return config, axis, fraction
    start, start_fraction = under or (base, 0.0)
    fills = [a for a, fields in space.axes.items()
             if a != axis and not any(name in DISCRETE_FIELDS for name in fields)]
    options = [(*contract(start, a, target_flops, space, cost=cost), a) for a in fills]
    best, fill_fraction, fill = min([*options, (config, fraction, "")],
                                    key=lambda o: abs(cost.of(o[0]) - target_flops))
    if not fill:
        return config, axis, fraction
    return (best, fill, fill_fraction) if start == base else (best, f"{axis}+{fill}", start_fraction)


def estimate_steps(start: X3DConfig, target: float, cost: Cost = FLOPS) -> int:
    """Rough number of doubling steps from ``start`` to the target, in ``cost``'s unit (for progress display)."""
    ratio = target * cost.per_unit / cost.estimate(start)
    return max(1, math.ceil(math.log2(ratio))) if ratio > 1 else 0


def memoised(score: ScoreFn, ceiling_flops: float = math.inf,
             cost: Cost = FLOPS) -> Callable[[Sequence[Candidate]], dict[str, Outcome]]:
    """``score`` that never asks twice for a config and skips configs above ``ceiling_flops`` (in ``cost.of``'s
    base units) untrained."""
    memo: dict[str, Outcome] = {}

    def _score(candidates: Sequence[Candidate]) -> dict[str, Outcome]:
        todo, queued = [], set()
        for c in candidates:
            if c.key in memo or c.key in queued:
                continue
            if cost.of(c.config) > ceiling_flops:
                memo[c.key] = Outcome("skipped", reason=f"{cost.of(c.config) / cost.per_unit:.3g} {cost.unit} "
                                                        f"above the ceiling")
            else:
                todo.append(c)
                queued.add(c.key)
        if todo:
            answers = score(todo)
            for c in todo:
                memo[c.key] = answers.get(c.key, Outcome("failed", reason="no result returned"))
        return {c.key: memo[c.key] for c in candidates}
    return _score


def score_start(start: X3DConfig, score: ScoreFn) -> Outcome:
    """Train the start (step 0) so that step 1 can inherit its weights; an error if it cannot be trained."""
    first = Candidate(0, "start", start, kind="start")
    outcome = score([first])[first.key]
    if not outcome.usable:
        raise SearchError(f"the start {start.short} could not be trained: {outcome.status} {outcome.reason}")
    return outcome


def take_step(base: X3DConfig, index: int, space: SearchSpace, score: ScoreFn, cost: Cost = FLOPS,
              ties: Ties = Ties()) -> Step | None:
    """Score every one-step expansion of ``base`` inside the box and keep the best (:func:`choose`); None when
    all are above the ceiling. A SearchError when no axis can step (every one at its bound)."""
    candidates, notes = offer(base, space, index)
    if not candidates:
        raise SearchError(f"step {index}: no axis can grow {base.short} ({count_flops(base) / 1e9:.4g} GFLOPs) "
                          f"inside the box of {space.name}: " + "; ".join(f"{a} {n}" for a, n in notes.items()))
    outcomes = score(candidates)
    if all(outcomes[c.key].status == "skipped" for c in candidates):
        return None
    chosen = choose(candidates, outcomes, cost, ties)
    if chosen is None:
        reasons = "; ".join(f"{c.axis}: {outcomes[c.key].status} {outcomes[c.key].reason}".strip()
                            for c in candidates)
        raise SearchError(f"step {index}: no candidate could be scored ({reasons})")
    return Step(index, base, tuple(candidates), outcomes, chosen, notes)


def _best_at_top(children: Sequence[Candidate], outcomes: Mapping[str, Outcome]) -> tuple[int, float] | None:
    """(epochs, rank) of the best usable child at the highest epochs any of them reached; None if none is usable."""
    usable = [(outcomes[c.key].epochs or 0, outcomes[c.key].rank) for c in children if outcomes[c.key].usable]
    return max(usable) if usable else None


def _look_ahead(step: Step, space: SearchSpace, score: ScoreFn, goes_on: Callable[[X3DConfig], bool],
                cost: Cost = FLOPS, ties: Ties = Ties()) -> Step:
    """Beam width 2 for one step: the winner and the runner-up each take the next step, and the runner-up is kept
    only if its own best next candidate beats the winner's by more than the tie margin at the same epochs."""
    first = step.chosen
    second = choose([c for c in step.candidates if c.key != first.key], step.outcomes, cost, ties)
    if second is None or not (goes_on(first.config) and goes_on(second.config)):
        return step
    ours_next = step_candidates(first.config, space, step.index + 1)
    ours = _best_at_top(ours_next, score(ours_next))  # the winner's next step is trained anyway
    shared = {c.key for c in ours_next}  # a config both reach trained once, from the winner: not the runner-up's
    theirs_next = [replace(c, kind="lookahead") for c in step_candidates(second.config, space, step.index + 1)
                   if c.key not in shared]
    theirs = _best_at_top(theirs_next, score(theirs_next))
    if ours is None or theirs is None:  # nothing to compare (a failing next step stays the search's error)
        side = first if ours is None else second
        return replace(step, lookahead=f"looked ahead: {first.axis} kept, {side.axis}'s next step has no usable "
                                       f"candidate")
    if ours[0] != theirs[0]:  # a step's epochs follow its parent's cost, so the two sides may differ
        return replace(step, lookahead=f"looked ahead: {first.axis} kept, not compared: the next steps trained "
                                       f"{ours[0]} and {theirs[0]} epochs")
    switch = theirs[1] > ours[1] + ties.within
    (kept, best), (lost, other) = ((second, theirs), (first, ours)) if switch else ((first, ours), (second, theirs))
    note = (f"looked ahead: {kept.axis} {'replaced' if switch else 'kept over'} {lost.axis}, best next candidate "
            f"{best[1]:.4g} ({kept.axis}) against {other[1]:.4g} ({lost.axis})")
    return replace(step, chosen=kept, replaced=first if switch else None, lookahead=note)


def check_land_within(land_within: float) -> None:
    """``land_within`` must be in [1, 2] (NaN is not): one partial step covers at most about a doubling."""
    if not 1 <= land_within <= 2:
        raise ConfigError(f"--land-within must be between 1 (always a full step, then contraction) and 2, "
                          f"got {land_within:g}")


def run_search(space: SearchSpace, target: float, score: ScoreFn, *, cost: Cost = FLOPS,
               ceiling: float | None = None, evaluate_contractions: bool = False,
               max_steps: int = 30, train_start: bool = False, land_within: float = 1.0,
               ties: Ties = Ties(), lookahead: bool = False,
               on_step: Callable[[Step], None] | None = None) -> SearchResult:
    """Forward expansion from the space's start until C(X) >= target, then contraction.

    C is ``cost`` (exact FLOPs by default, or e.g. measured latency); ``target`` and ``ceiling`` are in
    its unit (GFLOPs by default). Every step stays inside the space's box (:func:`offer`); a target the
    box cannot reach is a one-line SearchError before anything is scored.
    Candidates above ``ceiling`` are skipped without training. With
    ``evaluate_contractions`` every axis that can reach the target is contracted onto it
    and the proxy picks among them; otherwise the last-expanded axis is contracted. With
    ``train_start`` the start is scored first (step 0), so that step 1 can inherit its weights.
    Once a model is within ``land_within`` times under the target (e.g. sqrt(2): less than half
    a doubling to go), a partial step lands on it instead of a full step that a contraction
    would mostly undo: of the last step's axis, or of the proxy's pick among all axes with
    ``evaluate_contractions``. 1 (the paper's protocol) always takes the full step.
    ``ties`` are :func:`choose`'s tie rules for every choice. With
    ``lookahead`` each full step keeps the better of its best two by how their own next step scores
    (:func:`_look_ahead`).
    """
    check_land_within(land_within)
    start = space.start
    goal = target * cost.per_unit
    if cost.of(start) >= goal:
        raise ConfigError(f"target {target:g} {cost.unit} is not above the start's cost "
                          f"{cost.of(start) / cost.per_unit:.4f} {cost.unit}")
    check_reachable(space, target, cost)
    _score = memoised(score, math.inf if ceiling is None else ceiling * cost.per_unit, cost)
    if train_start:
        score_start(start, _score)
    current, steps, contraction = start, [], None

    def result(final: X3DConfig) -> SearchResult:
        return SearchResult(start, tuple(steps), contraction, final, target, cost)

    def full_step_next(config: X3DConfig) -> bool:  # under the target and not close enough to land
        return cost.of(config) < goal and cost.of(config) * land_within <= goal

    while cost.of(current) < goal:
        if steps and not full_step_next(current):
            axes = [steps[-1].chosen.axis]  # at its bound, land() tops up with another axis
            if evaluate_contractions:
                axes += [c.axis for c in step_candidates(current, space, len(steps) + 1) if c.axis != axes[0]]
            contraction = _contract(current, len(steps) + 1, axes, space, goal, evaluate_contractions, _score,
                                    cost, "land", ties)
            return result(contraction.config)
        if len(steps) >= max_steps:
            raise ConfigError(f"no convergence to {target:g} {cost.unit} within {max_steps} steps")
        step = take_step(current, len(steps) + 1, space, _score, cost, ties)
        if step is None:
            # every full step is above the ceiling: land on the target by partial steps instead
            axes = [c.axis for c in step_candidates(current, space, len(steps) + 1)]
            contraction = _contract(current, len(steps) + 1, axes, space, goal, True, _score, cost, "land", ties)
            return result(contraction.config)
        if lookahead and step.index < max_steps:  # the look takes the next step, which max_steps may forbid
            step = _look_ahead(step, space, _score, full_step_next, cost, ties)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        current = step.chosen.config

    if cost.of(current) > goal:
        last = steps[-1]
        axes = [last.chosen.axis]
        if evaluate_contractions:
            axes += [c.axis for c in last.candidates
                     if c.axis != last.chosen.axis and cost.of(c.config) >= goal]
        contraction = _contract(last.base, last.index, axes, space, goal, evaluate_contractions, _score, cost,
                                ties=ties)
        current = contraction.config
    return result(current)


def _contract(base: X3DConfig, step: int, axes: Sequence[str], space: SearchSpace, target: float,
              evaluate: bool, score: Callable[[Sequence[Candidate]], dict[str, Outcome]], cost: Cost,
              kind: str = "contract", ties: Ties = Ties()) -> Contraction:
    """Partial steps of ``axes`` from ``base`` onto the target (in ``cost.of``'s base units); the first unless
    evaluated."""
    options = []
    for axis in axes:
        config, label, fraction = land(base, axis, target, space, cost=cost)
        options.append(Candidate(step, label, config, kind="contract", fraction=fraction, parent=base))
    evaluated: Mapping[str, Outcome] = {}
    chosen = options[0]
    if evaluate:
        evaluated = score(options)
        chosen = choose(options, evaluated, cost, ties) or options[0]
    return Contraction(chosen.axis, chosen.fraction, chosen.config, count_flops(chosen.config) / 1e9,
                       target / cost.per_unit, evaluated, base, kind)
