"""Checkpoint I/O for the training loop, behind a small interface.

The loop hands a payload (weights, optimiser, scheduler, counters, RNG states) to a
:class:`CheckpointStore` after every epoch and asks it for the last one on resume. It never
touches files itself, so a Ray Train worker can plug in a store that goes through
``ray.train`` checkpoints instead of a local folder.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch

from .errors import ConfigError, UserError

__all__ = ["CheckpointStore", "FileCheckpoints", "capture_rng", "restore_rng", "check_identity",
           "atomic_torch_save", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"


class CheckpointStore(Protocol):
    """Where a training's state lives between epochs."""

    def load(self) -> dict[str, Any] | None:
        """The last saved payload, or None when there is none."""

    def save(self, payload: Mapping[str, Any]) -> None:
        """Persist ``payload`` so that a kill at any moment leaves the previous or the new one."""


_DAMAGED = ("PytorchStreamReader", "corrupt", "Invalid magic number", "Invalid protocol")  # torch.load on a bad file


class FileCheckpoints:
    """A checkpoint file in a folder (``checkpoint.pt``), replaced atomically after every epoch."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / CHECKPOINT

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except OSError as err:
            raise UserError(f"cannot read {self.path}: {err.strerror or err}") from None
        except (EOFError, ValueError, pickle.UnpicklingError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not any(s in str(err) for s in _DAMAGED):
                raise  # not the file's fault (e.g. out of memory)
            raise UserError(f"{self.path} is damaged ({type(err).__name__}); delete it to start that training "
                            f"over") from None

    def save(self, payload: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(payload), self.path)


def check_identity(checkpoint: Mapping[str, Any], identity: Mapping[str, Any], where: str,
                   omitted: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Refuse a checkpoint written for another config, schedule or seed (one-line error).

    A mapping recorded with more keys (fields that have since left it) is compared on this version's keys;
    ``omitted[key]`` gives the values of fields a mapping leaves out at their defaults, compared on both sides.
    """
    for key, value in identity.items():
        recorded = checkpoint.get(key)
        if isinstance(value, Mapping) and isinstance(recorded, Mapping):
            defaults = (omitted or {}).get(key, {})
            value = {**defaults, **value}
            recorded = {k: recorded.get(k, defaults.get(k)) for k in value}
        if recorded != value:
            raise ConfigError(f"{where} was written for a different {key}; use a new output folder "
                              f"or delete the checkpoint to start over")


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every random generator the loop draws from, for an exact resume."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["random"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state_all(rng["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file and ``os.replace``: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
