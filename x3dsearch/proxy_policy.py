"""Which recipe a search's candidates train with: a frozen :class:`ProxyPolicy` (epochs by a step's cost,
rungs, close calls, the start's epochs) around the proxy's :class:`~x3dsearch.recipe.Recipe`.

A schedule entry of ``schedules.yaml`` is one mapping of both; :meth:`ProxyPolicy.from_dict` splits it and
:meth:`ProxyPolicy.to_dict` joins it again. ``docs/schedules.md`` says what each lever does and why.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError
from .fields import check_int, number
from .recipe import RECIPE_FIELDS, Recipe
from .rungs import Rungs
from .search import Ties

__all__ = ["ProxyPolicy", "POLICY_FIELDS", "RANK_BY"]

RANK_BY = ("top1", "nll")  # what a search step ranks its candidates by

_RETIRED = ("debug_nan_step",)  # recorded as null by run.yaml files before the split; a test hook now


@dataclass(frozen=True)
class ProxyPolicy:
    """The proxy ``recipe`` and how a search varies it: ``rungs`` (increasing epochs ending at the recipe's,
    successive halving keeping ``rung_keep``), ``close_call``/``close_call_seeds`` (re-train the best two with
    other seeds when that close), ``step_compute``/``max_epochs``/``epochs_under`` (epochs by a step's cost),
    ``start_epochs`` (the search's start) and ``rank_by`` (what an expansion step ranks its candidates by: val
    ``top1``, or ``nll``, the val negative log-likelihood, lower better; close calls are then in nats) and
    ``fewer_params_within`` (candidates ranked within it of the best count as tied, and the one with the fewest
    parameters wins; 0: only exact ties, which go to the cheaper config), ``longer_window_ties`` (among those tied,
    X-Temporal beats X-Fast: both change their parent's frames, with the same parameters, over a longer window)
    and ``lookahead`` (beam width 2 for one step: a step's best two each take the next step, and the one whose best
    next candidate ranks higher is kept)."""

    recipe: Recipe = Recipe()
    rungs: tuple[int, ...] | None = None
    rung_keep: float = 0.5
    close_call: float = 0.0
    close_call_seeds: int = 0
    step_compute: float | None = None
    max_epochs: int | None = None
    epochs_under: tuple[tuple[float, int], ...] | None = None
    start_epochs: int | None = None
    rank_by: str = "top1"
    fewer_params_within: float = 0.0
    longer_window_ties: bool = False
    lookahead: bool = False

    def __post_init__(self) -> None:
        where = f"schedule {self.recipe.name!r}"
        epochs = self.recipe.epochs
        if self.rungs is not None:
            rungs = self.rungs
            if (isinstance(rungs, (str, bytes)) or not hasattr(rungs, "__iter__")
                    or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rungs)
                    or list(rungs) != sorted(set(rungs)) or not rungs or list(rungs)[-1] != epochs):
                raise ConfigError(f"{where}: rungs must be increasing positive epoch counts ending at epochs "
                                  f"({epochs}), got {rungs!r}")
            object.__setattr__(self, "rungs", tuple(rungs))
        if not 0 < number(where, "rung_keep", self.rung_keep) <= 1:
            raise ConfigError(f"{where}: rung_keep must be in (0, 1], got {self.rung_keep!r}")
        if number(where, "close_call", self.close_call) < 0:
            raise ConfigError(f"{where}: close_call must be >= 0, got {self.close_call!r}")
        check_int(where, "close_call_seeds", self.close_call_seeds, low=0)
        if self.step_compute is not None and number(where, "step_compute", self.step_compute) <= 0:
            raise ConfigError(f"{where}: step_compute must be positive or null, got {self.step_compute!r}")
        if self.max_epochs is not None:
            check_int(where, "max_epochs", self.max_epochs, low=epochs, hint=f" >= epochs ({epochs})")
        if self.start_epochs is not None:
            check_int(where, "start_epochs", self.start_epochs, low=1, hint=" or null")
        self._check_epochs_under(where)
        if self.rank_by not in RANK_BY:
            raise ConfigError(f"{where}: rank_by must be one of {', '.join(RANK_BY)}, got {self.rank_by!r}")
        if number(where, "fewer_params_within", self.fewer_params_within) < 0:
            raise ConfigError(f"{where}: fewer_params_within must be >= 0, got {self.fewer_params_within!r}")
        for name in ("longer_window_ties", "lookahead"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.longer_window_ties and not self.fewer_params_within:
            raise ConfigError(f"{where}: longer_window_ties breaks near-ties, so it needs fewer_params_within > 0")

    def _check_epochs_under(self, where: str) -> None:
        if self.epochs_under is None:
            return
        message = (f"{where}: epochs_under must be [[gflops, epochs], ...] with increasing positive gflops "
                   f"and positive integer epochs, got {self.epochs_under!r}")
        try:
            pairs = [(number(where, "gflops", g), e) for g, e in self.epochs_under]
            for _, epochs in pairs:
                check_int(where, "epochs", epochs, low=1)
        except (ConfigError, TypeError, ValueError):
            raise ConfigError(message) from None
        bounds = [g for g, _ in pairs]
        if not pairs or bounds[0] <= 0 or bounds != sorted(set(bounds)):
            raise ConfigError(message)
        object.__setattr__(self, "epochs_under", tuple((float(g), e) for g, e in pairs))

    def for_step(self, gflops: float, clips: int) -> "ProxyPolicy":
        """This policy for a search step whose candidates cost about ``gflops`` and train on ``clips`` clips.

        Under a bound of ``epochs_under`` the recipe trains that pair's epochs; otherwise, with ``step_compute``,
        ``ceil(step_compute / (gflops * clips))`` epochs (at least the recipe's, at most ``max_epochs``). The
        rungs and the warm-up stretch in proportion; without either rule, the policy is unchanged.
        """
        base = self.recipe.epochs
        epochs = next((e for bound, e in self.epochs_under or () if 0 < gflops < bound), None)
        if epochs is None:
            if self.step_compute is None or gflops <= 0 or clips <= 0:
                return self
            ceiling = self.max_epochs if self.max_epochs is not None else base
            epochs = min(ceiling, max(base, math.ceil(self.step_compute / (gflops * clips))))
        if epochs == base:
            return self
        rungs = None
        if self.rungs is not None:
            stretched = sorted({max(1, round(r * epochs / base)) for r in self.rungs[:-1]} - {epochs})
            rungs = (*stretched, epochs)
        ceiling = None if self.max_epochs is None else max(self.max_epochs, epochs)
        return self.replace(recipe=self.recipe.stretched(epochs), rungs=rungs, max_epochs=ceiling)

    def for_start(self, epochs: int | None = None) -> "ProxyPolicy":
        """This policy for one network trained alone (no rungs), ``epochs`` long.

        By default the search's start: ``start_epochs`` when set, else unchanged.
        """
        epochs = self.start_epochs if epochs is None else epochs
        if epochs is None or epochs == self.recipe.epochs and self.rungs is None:
            return self
        return self.replace(recipe=self.recipe.stretched(epochs), rungs=None, step_compute=None, max_epochs=None)

    def path_epochs(self, start_gflops: float, base_gflops: float, clips: int) -> int:
        """Epochs an inheriting search has trained a network of ``base_gflops`` by the time it expands it.

        The start (``start_gflops``) trains :meth:`for_start` epochs; each step about doubles the cost
        and adds its :meth:`for_step` epochs, over ``round(log2(base / start))`` steps.
        """
        steps = round(math.log2(base_gflops / start_gflops)) if base_gflops > start_gflops > 0 else 0
        return self.for_start().recipe.epochs + sum(self.for_step(start_gflops * 2 ** k, clips).recipe.epochs
                                                    for k in range(1, steps + 1))

    def epoch_range(self) -> tuple[int, int]:
        """Fewest and most epochs a search step can train (:meth:`for_step` over every cost)."""
        counts = [self.recipe.epochs, *(e for _, e in self.epochs_under or ())]
        if self.step_compute is not None:
            counts.append(self.max_epochs if self.max_epochs is not None else self.recipe.epochs)
        return min(counts), max(counts)

    def ladder(self, close_calls: bool = True) -> Rungs:
        """The rungs a batch of this policy climbs (one rung of all the recipe's epochs without rungs);
        ``close_calls=False`` re-trains no close call."""
        return Rungs(self.rungs or (self.recipe.epochs,), self.rung_keep, self.close_call,
                     self.close_call_seeds if close_calls else 0)

    @property
    def ties(self) -> Ties:
        """The search's tie rules (:func:`x3dsearch.search.choose`) this policy sets."""
        return Ties(self.fewer_params_within, self.longer_window_ties)

    def to_dict(self) -> dict[str, Any]:
        """The one flat mapping of a schedule entry: the recipe's fields, then the policy's (lists, numbers;
        ``rank_by``, ``fewer_params_within``, ``longer_window_ties`` and ``lookahead`` only when not their defaults)."""
        out = dict(self.recipe.to_dict())
        out.update({name: getattr(self, name) for name in POLICY_FIELDS})
        out["rungs"] = list(self.rungs) if self.rungs is not None else None
        out["epochs_under"] = [list(p) for p in self.epochs_under] if self.epochs_under is not None else None
        for name, default in (("rank_by", "top1"), ("fewer_params_within", 0.0), ("longer_window_ties", False),
                              ("lookahead", False)):
            if out[name] == default:  # defaults stay unwritten, so older run.yaml files and folder digests match
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProxyPolicy":
        """Split one schedule mapping into its recipe and this policy; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a schedule must be a mapping of field: value, got {type(data).__name__}")
        known = (*RECIPE_FIELDS, *POLICY_FIELDS)
        unknown = sorted(k for k in data if k not in known and not (k in _RETIRED and data[k] is None))
        if unknown:
            raise ConfigError(f"schedule {data.get('name', '?')!r}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        recipe = Recipe.from_dict({k: v for k, v in data.items() if k in RECIPE_FIELDS})
        return cls(recipe, **{k: v for k, v in data.items() if k in POLICY_FIELDS})

    def replace(self, **changes: Any) -> "ProxyPolicy":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(ProxyPolicy) if f.name != "recipe")
