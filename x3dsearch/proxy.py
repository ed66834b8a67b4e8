"""One proxy training of a search candidate, as a Ray worker runs it.

With ``init: inherit`` the candidate starts from its parent's proxy-trained weights, expanded
function-preservingly (:mod:`x3dsearch.inherit`), so training accumulates along the search path;
with ``init: scratch`` (the paper's protocol) it starts from a fresh initialisation. Either way
the trained weights are kept in the run directory's ``weights/`` folder, where the children of
the candidate, a resumed search and every Ray node sharing that folder find them.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from .config import X3DConfig
from .inherit import inherit
from .recipe import Recipe
from .trial import Init, TrialJob
from .train import cpu_time, train

__all__ = ["weights_file", "initial_state", "run_proxy"]


def _digest(key: str) -> str:
    """A short file-name-safe digest of a config's canonical key."""
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def weights_file(weights_dir: str | Path, key: str) -> Path:
    """Where the proxy-trained weights of the config with canonical ``key`` are kept."""
    return Path(weights_dir) / f"{_digest(key)}.pt"


def initial_state(config: X3DConfig, parent: X3DConfig | None, weights_dir: str | Path | None,
                  seed: int) -> tuple[dict[str, torch.Tensor] | None, Init]:
    """The weights ``config`` inherits from ``parent`` and where they came from.

    ``(None, SCRATCH)`` without a parent; ``(None, FALLBACK)`` when the parent's weights are missing
    (its training failed, or the folder is not shared), so the trial still runs.
    """
    if parent is None or weights_dir is None:
        return None, Init.SCRATCH
    source = weights_file(weights_dir, parent.key)
    if not source.is_file():
        return None, Init.FALLBACK
    state = torch.load(source, map_location="cpu", weights_only=True)
    return inherit(state, parent, config, seed=seed), Init.INHERIT


def run_proxy(job: TrialJob) -> dict[str, Any]:
    """Train one candidate as ``job`` asks; the TrainResult as a dict plus ``init`` (how the weights started),
    ``parent_key``, and the ``seconds`` and ``cpu_seconds`` of this call alone (a rung's, not its training's so far).

    With ``stop_epochs`` the training pauses there (a rung) with its checkpoint in ``trials_dir``, and a
    later job with a larger ``stop_epochs`` continues it. A repeat with another seed keeps no weights.
    """
    started, cpu_started = time.monotonic(), cpu_time()
    config = X3DConfig.from_dict(job.config)
    seed = job.seed + job.seed_offset
    parent = X3DConfig.from_dict(job.parent) if job.parent else None
    state, init = initial_state(config, parent if job.init == Init.INHERIT else None, job.weights_dir, seed)
    trial_dir = None
    if job.stop_epochs is not None and job.trials_dir:
        trial_dir = Path(job.trials_dir) / f"{_digest(config.key)}-s{job.seed_offset}"
    keep = weights_file(job.weights_dir, config.key) if job.weights_dir is not None and job.seed_offset == 0 else None
    result = train(config, job.data, Recipe.from_dict(job.recipe), seed=seed, progress=False,
                   threads=max(1, int(job.cpus)), init_state=state, weights_out=keep,
                   out_dir=trial_dir, resume=trial_dir is not None, stop_after_epochs=job.stop_epochs)
    return dict(result.to_dict(), init=init.value, parent_key=parent.key if parent else None,
                seconds=time.monotonic() - started, cpu_seconds=cpu_time() - cpu_started)
