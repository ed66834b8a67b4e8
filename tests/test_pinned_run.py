"""A pinned stub-scored search through the real runner and Ray: its run.yaml (as --resume compares it), journal,
path and report must not change (every number a run produces stays the same across refactors).

The stub's top-1 depends on the config and on everything the proxy policy decides for the trial (epochs by
step cost, rung, seed, inheritance), so a change in how a run is planned or recorded shows in the journal.
``python tests/test_pinned_run.py`` rewrites the pinned file; do that only for an intended change.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
import ray.cloudpickle
import yaml

from x3dsearch.config import X3DConfig
from x3dsearch.data import fingerprint
from x3dsearch.report import render, run_report
from x3dsearch.rundir import RunDir
from x3dsearch.runner import ExpandSettings, run_expand
from x3dsearch.trial import TrialJob

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

PINNED = Path(__file__).parent / "data" / "pinned_run.json"
# every proxy lever at once: epochs by step cost (under a bound and by step_compute), rungs, close calls
PROXY = {"optimizer": "adamw", "epochs": 2, "base_lr": 0.003, "warmup_epochs": 0.1, "spatial_scale": 0.25,
         "rungs": [1, 2], "rung_keep": 0.5, "close_call": 0.05, "close_call_seeds": 1, "step_compute": 5.0,
         "max_epochs": 6, "epochs_under": [[0.02, 8]], "start_epochs": 3}
_VOLATILE = ("started", "ended", "node")  # wall-clock times and the host of a journal record
_VOLATILE_METRICS = ("node", "host", "pid", "trial_started", "trial_ended", "date", "timestamp", "time_this_iter_s",
                     "time_since_restore", "time_total_s", "trial_id", "hostname", "node_ip")  # and Tune's


def _stub(job: TrialJob) -> dict[str, Any]:
    """A deterministic proxy score from the config and what the policy planned for this trial."""
    config = X3DConfig.from_dict(job.config)
    recipe = job.recipe
    epochs = job.stop_epochs or recipe["epochs"]
    wobble = zlib.crc32(config.key.encode()) % 97 / 1000
    inherited = job.init == "inherit" and job.parent is not None
    top1 = 0.1 + wobble + 0.01 * epochs + 0.002 * recipe["epochs"] + 0.003 * job.seed_offset
    return {"status": "ok", "top1": round(top1 + 0.01 * inherited, 6), "top5": 0.5, "seconds": float(epochs),
            "init": "inherit" if inherited else "scratch", "schedule": recipe["name"]}


def _data(root: Path) -> Path:
    """A data folder of 48 listed train and 12 val videos of 4 classes (the stub never opens them)."""
    root.mkdir()
    for split, count in (("train", 48), ("val", 12)):
        (root / f"{split}.csv").write_text("".join(f"v{split}{i}.mp4 {i % 4}\n" for i in range(count)))
    return root


def pinned_search(tmp: Path) -> dict[str, Any]:
    """Run the pinned search in ``tmp``: run.yaml, journal, path and the JSON report, with times and paths masked."""
    (tmp / "proxy.yaml").write_text(yaml.safe_dump(PROXY))
    settings = ExpandSettings(target_gflops=0.03, out=str(tmp / "run"), data=str(_data(tmp / "data")),
                              proxy_schedule=str(tmp / "proxy.yaml"), seed=5, final_training=False,
                              full_schedule="cpu_full",  # the default when the run was pinned
                              evaluate_contractions=True, land_within=1.5, max_concurrent=1)
    run_expand(settings, quiet=True, trial_fn=_stub)
    run = RunDir(settings.out)
    journal = []
    for record in run.records():
        record = {k: v for k, v in record.items() if k not in _VOLATILE}
        record["metrics"] = {k: v for k, v in record["metrics"].items() if k not in _VOLATILE_METRICS}
        journal.append(record)
    text = json.dumps({"run.yaml": run.settings(), "journal": journal, "path": run.read_path(),
                       "report": json.loads(render(run_report(settings.out), "json"))}, indent=1, sort_keys=True)
    return json.loads(text.replace(str(tmp), "TMP"))


_ADDED_SINCE_PINNED = {"cost": "flops", "latency_device": "cpu", "latency_batch": 1, "latency_threads": 1,
                       "final_init": "scratch", "horizontal_flip": True}  # its data has no augment.json


_TOTALS_ADDED_SINCE_PINNED = {"proxy_cpu_hours_used": None, "proxy_attempts_without_cpu_time": 25,
                              "final_cpu_hours_used": None}


def _set(settings: dict[str, Any]) -> dict[str, Any]:
    """Recorded settings without fields left unset (null) or a schedule's free-text description, at any depth, as
    ``--resume`` compares them (rewording a shipped schedule's description changes no run)."""
    return {k: _set(v) if isinstance(v, dict) else v for k, v in settings.items()
            if v is not None and k != "description"}


@pytest.fixture
def private_ray() -> Iterator[None]:
    tmp = Path(tempfile.mkdtemp(prefix="x3p", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield
        ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_the_pinned_search_gives_the_same_run_yaml_journal_path_and_report(private_ray: None, tmp_path: Path) -> None:
    got = pinned_search(tmp_path)
    pinned = json.loads(PINNED.read_text())
    recorded = _set(got["run.yaml"])
    added = {k: recorded.pop(k) for k in _ADDED_SINCE_PINNED}  # settings of later features, at their defaults
    assert added == _ADDED_SINCE_PINNED
    assert recorded.pop("data_fingerprint") == fingerprint(tmp_path / "data")
    assert recorded == _set(pinned["run.yaml"])  # as --resume compares them
    totals = {k: got["report"]["totals"].pop(k) for k in _TOTALS_ADDED_SINCE_PINNED}
    assert totals == _TOTALS_ADDED_SINCE_PINNED  # the stub trial records no CPU time
    for part in ("path", "report"):
        assert got[part] == pinned[part], part
    assert len(got["journal"]) == len(pinned["journal"])
    for i, (record, expected) in enumerate(zip(got["journal"], pinned["journal"])):
        assert record.pop("cpu_seconds") is None  # a journal field added since pinning; the stub measures no time
        assert record == expected, f"journal line {i + 1}"


def _untrained(job: TrialJob) -> dict[str, Any]:
    """A trial that must not run: a resumed finished search answers every candidate from its journal."""
    return {"status": "failed", "reason": f"trained {job.key} again"}


def test_the_pinned_run_directory_resumes_without_training(private_ray: None, tmp_path: Path) -> None:
    pinned = json.loads(json.dumps(json.loads(PINNED.read_text())).replace("TMP", str(tmp_path)))
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(PROXY))
    _data(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump(pinned["run.yaml"], sort_keys=False))
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pinned["journal"]))
    settings = ExpandSettings(**{k: v for k, v in pinned["run.yaml"].items()
                                 if k in ExpandSettings.__dataclass_fields__})
    run_expand(settings, resume=True, quiet=True, trial_fn=_untrained)
    assert len(list(RunDir(run).records())) == len(pinned["journal"])
    assert RunDir(run).read_path() == pinned["path"]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        PINNED.write_text(json.dumps(pinned_search(Path(folder)), indent=1, sort_keys=True) + "\n")
        ray.shutdown()
