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
from typing import Any, Mapping

import torch

from .config import X3DConfig
from .inherit import inherit
from .schedule import Schedule
from .train import train

__all__ = ["INIT_MODES", "weights_file", "initial_state", "run_proxy"]

INIT_MODES = ("inherit", "scratch")


def _digest(key: str) -> str:
    """A short file-name-safe digest of a config's canonical key."""
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def weights_file(weights_dir: str | Path, key: str) -> Path:
    """Where the proxy-trained weights of the config with canonical ``key`` are kept."""
    return Path(weights_dir) / f"{_digest(key)}.pt"


def initial_state(config: X3DConfig, parent: X3DConfig | None, weights_dir: str | Path | None,
                  seed: int) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The weights ``config`` inherits from ``parent`` and a label saying where they came from.

    ``(None, "scratch")`` without a parent; ``(None, "scratch: ...")`` when the parent's weights are
    missing (its training failed, or the folder is not shared), so the trial still runs.
    """
    if parent is None or weights_dir is None:
        return None, "scratch"
    source = weights_file(weights_dir, parent.key)
    if not source.is_file():
        return None, "scratch: parent weights missing"
    state = torch.load(source, map_location="cpu", weights_only=True)
    return inherit(state, parent, config, seed=seed), "inherit"


def run_proxy(params: Mapping[str, Any]) -> dict[str, Any]:
    """Train one candidate (``config``, ``schedule``, ``data``, ``seed``; ``parent``, ``init``, ``weights_dir``).

    With ``stop_epochs`` the training pauses there (a rung) with its checkpoint in ``trials_dir``,
    and a later call with a larger ``stop_epochs`` continues it. ``seed_offset`` > 0 is a repeat with
    another seed (its weights are not kept). Returns the TrainResult as a dict plus ``init`` (how the
    weights started), ``parent_key``, and ``seconds`` of this call alone.
    """
    started = time.monotonic()
    config = X3DConfig.from_dict(params["config"])
    offset = int(params.get("seed_offset") or 0)
    seed = int(params["seed"]) + offset
    weights_dir = params.get("weights_dir")
    parent = X3DConfig.from_dict(params["parent"]) if params.get("parent") else None
    state, init = initial_state(config, parent if params.get("init") == "inherit" else None, weights_dir, seed)
    stop = params.get("stop_epochs")
    trial_dir = None
    if stop is not None and params.get("trials_dir"):
        trial_dir = Path(params["trials_dir"]) / f"{_digest(config.key)}-s{offset}"
    keep = weights_file(weights_dir, config.key) if weights_dir is not None and offset == 0 else None
    result = train(config, params["data"], Schedule.from_dict(params["schedule"]), seed=seed, progress=False,
                   threads=max(1, int(params.get("cpus", 1))), init_state=state, weights_out=keep,
                   out_dir=trial_dir, resume=trial_dir is not None, stop_after_epochs=stop)
    return dict(result.to_dict(), init=init, parent_key=parent.key if parent else None,
                seconds=time.monotonic() - started)
