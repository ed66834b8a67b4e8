"""The run directory: the single, durable source of truth of a search.

Layout of ``RUN_DIR``::

    run.yaml        resolved search space, schedules, target, seed and options
    journal.jsonl   one JSON line per finished trial attempt, fsynced as each ends
    path.json       the expansion path and the contraction (rewritten atomically)
    final/          config.yaml, model.pt, metrics.json of the fully trained model

Resuming replays the deterministic coordinator with the journal as its memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import yaml

from .errors import ConfigError, UserError
from .fields import read_yaml

__all__ = ["RunDir", "load_run", "atomic_write", "JOURNAL_COLUMNS"]

JOURNAL_COLUMNS = ["config_key", "step", "axis", "kind", "gflops", "params", "status", "top1", "top5",
                   "seconds", "cpu_seconds", "node", "attempt", "reason", "started", "ended"]
_MIN_FREE_BYTES = 200 * 2 ** 20


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    def exists(self) -> bool:
        return (self.path / "run.yaml").is_file()

    def check_resume(self, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """Refuse (one-line UserError) resuming this run with ``settings`` it cannot continue under; compares only
        the keys ``settings`` has (a dry run has no data fingerprint). Returns run.yaml rewritten where a resume
        may update it (the final training's options before it began; a fingerprint it lacked), else None."""
        recorded = self.settings()
        old = {**_BEFORE_RECORDED, **recorded}  # as settings_as_run(), reading run.yaml once
        for key, reason in _NOT_RESUMABLE_WITHOUT.items():
            if key in settings and key not in recorded:
                raise UserError(f"{self.path} was recorded {reason}, so this version would search another "
                                f"space; it cannot be resumed: start a new -o/--output")
        named = {name for name, resolved in _RESOLVED_AS.items() if resolved in old and resolved in settings}
        changed = sorted(k for k in settings if k in old and _comparable(old[k]) != _comparable(settings[k])
                         and k not in _RESUMABLE_CHANGES and k not in named)
        if "data_fingerprint" in changed and not {"data", "horizontal_flip"} & set(changed):
            where = settings.get("data") or "the default benchmark"
            raise UserError(f"the data of the run in {self.path} ({where}) has changed since the run began: its "
                            f"split lists, side files or video sizes differ, so a resume would mix two datasets' "
                            f"trainings; restore that data, or start a new -o/--output")
        changed = [k for k in changed if k != "data_fingerprint"]  # another folder or flip is named as such
        final_only = bool(changed) and set(changed) <= _FINAL_ONLY
        if changed and not (final_only and not self.final_dir.exists()):
            raise UserError(f"--resume with different {', '.join(_OPTION_OF.get(k, k) for k in changed)} "
                            f"than the run in {self.path} (it "
                            f"recorded {'; '.join(_recorded(k, old, settings) for k in changed)}); "
                            + (f"its final training has begun in {self.final_dir}: delete that folder to change "
                               f"it" if final_only else "use the original options or another -o/--output"))
        update = {k: settings[k] for k in _FINAL_ONLY if k in settings} if final_only else {}
        if "data_fingerprint" in settings and "data_fingerprint" not in recorded:
            update["data_fingerprint"] = settings["data_fingerprint"]  # a run from before fingerprints
        return {**recorded, **update} if update else None

    def create(self, settings: Mapping[str, Any], resume: bool) -> None:
        """Prepare the folder; refuse to mix a new search into an old run unless resuming."""
        if self.exists() and not resume:
            raise UserError(f"{self.path} already holds a run; pass --resume to continue it "
                            f"or choose another -o/--output")
        if resume and self.exists():
            rewritten = self.check_resume(settings)
            if rewritten is not None:
                atomic_write(self.path / "run.yaml", yaml.safe_dump(rewritten, sort_keys=False))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create run directory {self.path}: {err.strerror}") from None
        free = shutil.disk_usage(self.path).free
        if free < _MIN_FREE_BYTES:
            raise UserError(f"only {free / 2 ** 20:.0f} MiB free for the run directory {self.path}")
        if not self.exists():
            atomic_write(self.path / "run.yaml", yaml.safe_dump(dict(settings), sort_keys=False))

    def settings(self) -> dict[str, Any]:
        """The recorded settings (run.yaml); a damaged file is a UserError naming it."""
        try:
            data = read_yaml(self.path / "run.yaml", "run settings", exponent_floats=False) or {}
        except ConfigError as err:
            raise UserError(f"{err}; the run in {self.path} cannot be read") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.path / 'run.yaml'} is damaged: it holds no settings mapping")
        return data

    def settings_as_run(self) -> dict[str, Any]:
        """The settings the run ran with: those recorded, plus the value each setting added later had for runs
        recorded without it (e.g. ``horizontal_flip`` True: training mirrored clips before data could forbid it)."""
        return {**_BEFORE_RECORDED, **self.settings()}

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one trial record durably (flush and fsync before returning)."""
        line = json.dumps(dict(record), default=_json_default)
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every journal record; a torn last line (crash mid-write) is ignored."""
        if not self.journal_path.is_file():
            return
        with open(self.journal_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):  # anything else is damage, as a torn line is
                    yield record

    def write_path(self, data: Mapping[str, Any]) -> None:
        atomic_write(self.path / "path.json", json.dumps(dict(data), indent=2, default=_json_default))

    def read_path(self) -> dict[str, Any]:
        path = self.path / "path.json"
        hint = "; delete it and resume the run (--resume) to write it again"
        return read_json_object(path, hint) if path.is_file() else {}


def read_json_object(path: Path, hint: str = "") -> dict[str, Any]:
    """A run's JSON record (path.json, summary.json, metrics.json); a damaged one is a UserError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged (not a readable JSON object){hint}")
    return data


def _comparable(value: Any) -> Any:
    """A setting as ``--resume`` compares it: a schedule's or space's name (a label, the file's name when it sets
    none) and free-text description do not count, nor does a field left unset (None), so a run recorded before a
    new optional field resumes."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in ("name", "description") and v is not None}
    return value


def _recorded(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What the run recorded for a refused setting: its value, or the schedule or space it named and the fields
    that differ, so the user can pass the original option."""
    option = _OPTION_OF.get(key, key)
    if not isinstance(old[key], Mapping):
        return f"{option} {'none (the default)' if old[key] is None else old[key]}"
    label = f"{option} {old[option]}" if option in old else option
    if not isinstance(new[key], Mapping):
        return label
    was, now = _comparable(old[key]), _comparable(new[key])
    fields = sorted(f for f in was.keys() | now.keys() if was.get(f) != now.get(f))
    return f"{label}, which differs in {', '.join(fields)}"


# settings added after runs were recorded without them: the value those runs used
_BEFORE_RECORDED = {"land_within": 1.0, "cost": "flops", "target_ms": None, "latency_node": None,
                    "final_init": "inherit",  # the final training then followed --proxy-init
                    "horizontal_flip": True}  # training mirrored clips before the data could forbid it
# settings whose absence marks a run recorded under rules this version no longer follows
_NOT_RESUMABLE_WITHOUT = {"max_window": "before searches kept to the space's bounds and to windows the videos "
                                        "hold (and before partial steps kept their window)"}
# a schedule or space as the user named it, and the key of what it resolved to: where both runs recorded the
# resolved form, that is compared instead, so a moved file or a named copy of the same content still resumes
_RESOLVED_AS = {"proxy_schedule": "proxy", "full_schedule": "full", "space": "space_resolved"}
# how a refusal names a resolved key, or a property of the data
_OPTION_OF = {**{resolved: option for option, resolved in _RESOLVED_AS.items()},
              "horizontal_flip": "data (its augment.json) horizontal_flip"}
# what only the final training uses: a resume may change it until the final training has begun (run.yaml follows)
_FINAL_ONLY = {"final_init", "full", "full_schedule", "full_workers"}
# what a resume may change: where trials run, whether the final training runs, and where the folder now is
_RESUMABLE_CHANGES = {"out", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address", "storage",
                      "final_training", "quiet", "json", "resume"}


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """The journal of a run as a DataFrame: one row per trial attempt (see JOURNAL_COLUMNS)."""
    run = RunDir(run_dir)
    if not run.exists():
        raise UserError(f"{run_dir} is not a run directory (no run.yaml)")
    rows = list(run.records())
    frame = pd.DataFrame(rows)
    for column in JOURNAL_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame
