"""The search runner end to end: real Ray, real tiny trainings, kills, retries, divergence, two nodes.

Every search here but the look ahead's is one expansion step (three axes, each full step above the target) plus
contraction, on six 16-px videos with a one-epoch schedule, so a run costs about one Ray Tune batch.
The tests of the class share one local Ray in this process, started with the kill-once hook's env
set and its marker present, so the hook stays disarmed until a test deletes the marker. The run that
gets killed and the run on the two-node cluster go through the CLI in their own processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
import ray.cloudpickle
import yaml
from ray.cluster_utils import Cluster

import x3dsearch
from x3dsearch.config import X3DConfig
from x3dsearch.cost import count_flops
from x3dsearch.data import make_synthetic
from x3dsearch.dispatch import proxy_trial
from x3dsearch.faults import KILL_ONCE_ENV, nan_loss_at
from x3dsearch.rundir import RunDir, load_run
from x3dsearch.runner import Session, _outcome, run_expand
from x3dsearch.runspec import ExpandSettings, resolve
from x3dsearch.search import Ties, step_candidates
from x3dsearch.space import load_space
from x3dsearch.trial import Status, TrialJob, TrialRecord

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial_fn below travels to Ray workers

KILL_ENV = KILL_ONCE_ENV
SPACE = {"name": "tiny", "start": {"frames": 1, "stride": 8, "crop": 32, "num_classes": 3, "head_width": 32},
         "axes": {"depth": {"depth": 3.0}, "width": {"width": 2.0}, "bottleneck": {"bottleneck": 3.0}}}
SCHEDULE = {"epochs": 1, "batch_size": 2, "ref_batch_size": 2, "base_lr": 0.1, "spatial_scale": 0.5,
            "eval_views": [1, 1], "precision": "fp32", "cache": False}
CLASSES = ["texture-vertical", "flicker-3.5hz", "order-h-then-v"]
COLUMNS = ["config_key", "step", "axis", "gflops", "params", "status", "top1", "seconds", "node"]
TIMEOUT_S = 300


@dataclass(frozen=True)
class Bench:
    """The shared tiny dataset, search space and schedule, and the settings of a run on them."""

    root: Path
    target: float

    def settings(self, out: Path, **changes: Any) -> ExpandSettings:
        """Settings of a one-step search into ``out`` (no final training unless changed)."""
        base = ExpandSettings(target_gflops=self.target, out=str(out), space=str(self.root / "space.yaml"),
                              data=str(self.root / "data"), proxy_schedule=str(self.root / "tiny.yaml"),
                              full_schedule=str(self.root / "tiny.yaml"), seed=0, final_training=False,
                              cpus_per_trial=1.0)
        return replace(base, **changes)


def _cli_args(settings: ExpandSettings) -> list[str]:
    """``x3dsearch expand`` arguments that give exactly ``settings`` (plus --quiet --json)."""
    args = ["expand", "--target-gflops", repr(settings.target_gflops), "--out", settings.out,
            "--space", settings.space, "--data", str(settings.data), "--proxy-schedule", settings.proxy_schedule,
            "--full-schedule", settings.full_schedule, "--seed", str(settings.seed),
            "--cpus-per-trial", repr(settings.cpus_per_trial), "--quiet", "--json"]
    if not settings.final_training:
        args.append("--no-final-training")
    if settings.max_concurrent is not None:
        args += ["--max-concurrent", str(settings.max_concurrent)]
    if settings.address is not None:
        args += ["--address", settings.address]
    return args


@contextmanager
def _cli_process(settings: ExpandSettings, log: Path) -> Iterator[subprocess.Popen[str]]:
    """The CLI in its own session with a private Ray temp dir; its process group dies on the way out.

    A new session makes the CLI a process-group leader, so killpg reaches the Ray it starts too.
    """
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir=os.environ["RAY_TMPDIR"])
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "x3dsearch.cli", *_cli_args(settings)], env=env,
                                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every journal record of a run, read as the runner reads them (a torn last line is skipped)."""
    return list(RunDir(run_dir).records())


def _ok(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ok record of each config key (asserting there is at most one)."""
    ok = [r for r in records if r["status"] == "ok"]
    keys = [r["config_key"] for r in ok]
    assert len(keys) == len(set(keys)), f"a config was trained twice: {keys}"
    return {r["config_key"]: r for r in ok}


def _path(run_dir: str | Path) -> dict[str, Any]:
    """The run's path.json."""
    return json.loads((Path(run_dir) / "path.json").read_text())


def _route(path: dict[str, Any]) -> tuple[list[str], str, str]:
    """What a search decided: the chosen axis per step, the contracted axis, the final config."""
    return ([s["axis"] for s in path["steps"]], path["contraction"]["axis"], path["final"]["config_key"])


def _check_completed(run_dir: str | Path, target: float) -> dict[str, Any]:
    """Shared end-of-search checks: every step chose its best ok candidate; the final lands on the target."""
    path = _path(run_dir)
    ok = _ok(_records(run_dir))
    assert path["steps"], "no expansion step"
    for step in path["steps"]:
        assert step["config_key"] in ok and step["top1"] == ok[step["config_key"]]["top1"]
        scored = [c["top1"] for c in step["candidates"] if c["status"] == "ok"]
        assert step["top1"] == max(scored)
    final = X3DConfig.from_dict(path["final"]["config"])
    assert path["final"]["gflops"] == pytest.approx(count_flops(final) / 1e9)
    assert abs(path["final"]["gflops"] / target - 1) < 0.05
    return path


def _diverge_if_wider(job: TrialJob) -> dict[str, Any]:
    """Proxy trial in which every config wider than the start gets a NaN loss at its first step."""
    if job.config["width"] > 1:
        with nan_loss_at(0):
            return proxy_trial(job)
    return proxy_trial(job)


@pytest.fixture(scope="module", autouse=True)
def _isolated() -> Iterator[None]:
    """A private Ray temp dir (short: Ray's socket paths are length-limited), cache dir, one thread."""
    tmp = Path(tempfile.mkdtemp(prefix="x3r", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))  # ray.init() here must neither find nor advertise other clusters
        mp.setenv("X3DSEARCH_CACHE", str(tmp / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")  # the in-driver final training: 2 threads on 2 busy cores crawl
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv(KILL_ENV, raising=False)
        yield
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """Three synthetic classes, two train and two val videos each (16 px, 0.5 s); target twice the start."""
    root = tmp_path_factory.mktemp("bench")
    make_synthetic(root / "data", seed=0, videos_per_class=2, val_per_class=2, seconds=0.5, side=16,
                   workers=1, classes=CLASSES)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (root / "tiny.yaml").write_text(yaml.safe_dump(SCHEDULE))
    return Bench(root, target=2 * count_flops(load_space(root / "space.yaml").start) / 1e9)


class TestLocalRay:
    """Searches in this process on one shared local Ray (2 CPUs)."""

    @pytest.fixture(scope="class")
    def kill_marker(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
        """Start the shared Ray with the kill-once hook's env set (workers inherit it) but disarmed."""
        marker = tmp_path_factory.mktemp("hook") / "killed"
        marker.write_text("disarmed")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(KILL_ENV, str(marker))
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            yield marker
            ray.shutdown()

    @pytest.fixture(scope="class")
    def reference(self, kill_marker: Path, bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """An uninterrupted search with the final training, the reference the other runs compare to."""
        out = tmp_path_factory.mktemp("reference") / "run"
        run_expand(bench.settings(out, final_training=True, final_init="inherit"), quiet=True)
        return out

    def test_search_completes_with_journal_path_and_final_model(self, reference: Path, bench: Bench) -> None:
        path = _check_completed(reference, bench.target)
        assert len(path["steps"]) == 1 and path["contraction"]["axis"] == path["steps"][0]["axis"]
        frame = x3dsearch.load_run(reference)
        assert x3dsearch.load_run is load_run and "load_run" in x3dsearch.__all__
        assert set(COLUMNS) <= set(frame.columns)
        # the default --proxy-init inherit trains the start first (step 0); every candidate inherits from it
        assert len(frame) == 4 and set(frame["status"]) == {"ok"}
        assert list(frame["axis"])[0] == "start" and set(frame["axis"][1:]) == set(SPACE["axes"])
        assert frame["config_key"].is_unique and list(frame["step"]) == [0, 1, 1, 1] and frame["node"].notna().all()
        assert list(frame["init"]) == ["scratch", "inherit", "inherit", "inherit"]
        assert set(frame["parent_key"][1:]) == {frame["config_key"][0]}
        assert (frame["gflops"][1:] > bench.target).all() and (frame["params"] > 0).all()
        assert frame["top1"].between(0, 1).all() and (frame["seconds"] > 0).all() and (frame["cpu_seconds"] > 0).all()
        final = reference / "final"
        assert X3DConfig.from_yaml(final / "config.yaml").key == path["final"]["config_key"]
        assert (final / "model.pt").stat().st_size > 0
        metrics = json.loads((final / "metrics.json").read_text())
        assert metrics["status"] == "ok" and 0 <= metrics["top1"] <= 1
        # per-class results travel through Ray Tune into the journal; only the final training scores test
        proxy = [r["metrics"] for r in RunDir(reference).records()]
        assert all(sum(map(sum, m["val"]["confusion"])) == m["val"]["videos"] > 0 and m["test"] is None
                   for m in proxy)
        assert metrics["val"]["top1"] == metrics["top1"] and metrics["test"]["videos"] > 0
        summary = json.loads((reference / "summary.json").read_text())
        assert summary["trials"] == 4 and summary["final_metrics"]["top1"] == metrics["top1"]
        assert summary["final_metrics"]["init"] == "inherit"
        assert summary["final_metrics"]["origin_key"] == frame["config_key"][0]

    def test_a_moved_run_resumes_with_its_final_training_from_scratch(self, reference: Path, bench: Bench,
                                                                      tmp_path: Path) -> None:
        moved = tmp_path / "moved"  # the search's journal copied elsewhere; its final training may then change
        shutil.copytree(reference, moved, ignore=lambda folder, names:
                        ["final", "weights", "trials"] if Path(folder) == reference else [])
        summary = run_expand(bench.settings(moved, final_training=True, final_init="scratch"), resume=True,
                             quiet=True)
        assert RunDir(moved).settings()["final_init"] == "scratch"
        assert len(load_run(moved)) == len(load_run(reference))  # the journal replayed, nothing re-run
        assert summary["final_metrics"]["init"] == "scratch" and summary["final_metrics"]["origin_key"] is None
        assert summary["final"]["config_key"] == json.loads((reference / "summary.json").read_text())["final"][
            "config_key"]

    def test_killed_search_resumes_without_retraining(self, reference: Path, bench: Bench,
                                                      tmp_path: Path) -> None:
        settings = bench.settings(tmp_path / "run", max_concurrent=1)  # one trial at a time: a wide kill window
        with _cli_process(settings, tmp_path / "killed.log") as proc:
            deadline = time.monotonic() + TIMEOUT_S
            while not _ok(_records(settings.out)):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no trial finished in time"
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Ray and the running trial, all at once
        before = _ok(_records(settings.out))
        assert 0 < len(before) < 4 and not (Path(settings.out) / "path.json").exists()

        run_expand(replace(settings, max_concurrent=None), resume=True, quiet=True)
        after = _ok(_records(settings.out))
        assert set(before) <= set(after)  # and _ok saw no config trained twice
        expected = _ok(_records(reference))
        assert {k: r["top1"] for k, r in after.items()} == {k: r["top1"] for k, r in expected.items()}
        assert _route(_check_completed(settings.out, bench.target)) == _route(_path(reference))

    def test_killed_worker_is_retried(self, kill_marker: Path, bench: Bench, tmp_path: Path) -> None:
        kill_marker.unlink()  # arm: the next proxy trial to look writes it back and SIGKILLs itself
        run_expand(bench.settings(tmp_path / "run"), quiet=True)
        assert kill_marker.read_text().isdigit()  # the pid that died
        records = _records(tmp_path / "run")
        retried = [r for r in records if r["status"] == "retried"]
        assert retried and all(r["reason"] for r in retried)
        ok = _ok(records)
        assert {r["config_key"] for r in retried} <= set(ok) and len(ok) == 4
        assert all(ok[r["config_key"]]["attempt"] > r["attempt"] for r in retried)
        _check_completed(tmp_path / "run", bench.target)

    def test_diverging_axis_is_recorded_and_never_chosen(self, kill_marker: Path, bench: Bench,
                                                         tmp_path: Path) -> None:
        run_expand(bench.settings(tmp_path / "run"), quiet=True, trial_fn=_diverge_if_wider)
        records = _records(tmp_path / "run")
        diverged = [r for r in records if r["status"] == "diverged"]
        assert [r["axis"] for r in diverged] == ["width"]
        assert diverged[0]["reason"].startswith("diverged: loss nan at step 0") and diverged[0]["top1"] is None
        assert len(_ok(records)) == 3  # the start and two candidates
        path = _check_completed(tmp_path / "run", bench.target)
        chosen = [s["axis"] for s in path["steps"]] + [path["contraction"]["axis"]]
        assert "width" not in chosen
        statuses = {c["axis"]: c["status"] for s in path["steps"] for c in s["candidates"]}
        assert statuses == {"depth": "ok", "width": "diverged", "bottleneck": "ok"}


    def test_a_look_ahead_journals_the_runner_up_s_next_step_and_replays_without_training(
            self, kill_marker: Path, bench: Bench, tmp_path: Path) -> None:
        schedule = tmp_path / "ahead.yaml"
        schedule.write_text(yaml.safe_dump(dict(SCHEDULE, lookahead=True)))
        space = load_space(bench.root / "space.yaml")
        step1 = max(count_flops(c.config) for c in step_candidates(space.start, space, 1)) / 1e9
        settings = bench.settings(tmp_path / "run", target_gflops=1.5 * step1, land_within=1.0,
                                  proxy_schedule=str(schedule))
        run_expand(settings, quiet=True)
        records, path = _records(tmp_path / "run"), _path(tmp_path / "run")
        first = path["steps"][0]
        assert first["lookahead"].startswith("looked ahead: ")
        looks = [r for r in records if r["kind"] == "lookahead"]
        assert looks and {r["step"] for r in looks} == {2}
        assert len({r["parent_key"] for r in records if r["step"] == 2}) == 2  # both branches took step 2
        before = _ok(records)  # and no config trained twice
        run_expand(settings, resume=True, quiet=True)
        assert _ok(_records(tmp_path / "run")) == before and _route(_path(tmp_path / "run")) == _route(path)

    def test_step_prints_one_json_object_with_every_candidate(self, kill_marker: Path, bench: Bench, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
        from x3dsearch.cli import main

        base = tmp_path / "base.yaml"
        # four times the start's frames: about two cost doublings, as a search would reach it
        X3DConfig.from_dict(dict(SPACE["start"], frames=4, stride=2)).to_yaml(base)
        code = main(["step", "--from", str(base), "--data", str(bench.root / "data"), "--space",
                     str(bench.root / "space.yaml"), "--proxy-schedule", str(bench.root / "tiny.yaml"),
                     "--out", str(tmp_path / "step"), "--json"])
        assert code == 0
        step = json.loads(capsys.readouterr().out)
        assert X3DConfig.from_dict(step["base"]) == X3DConfig.from_yaml(base)
        assert [c["axis"] for c in step["candidates"]] == list(load_space(bench.root / "space.yaml").axes)
        for c in step["candidates"]:
            assert c["gflops"] > 0 and (c["top1"] is None or 0 <= c["top1"] <= 1)
        scored = [c for c in step["candidates"] if c["top1"] is not None]
        assert step["chosen"] == min(scored, key=lambda c: (-c["top1"], c["gflops"]))["axis"]  # ties: cheaper
        journal = load_run(tmp_path / "step")
        assert list(journal["axis"])[0] == "start" and set(journal["init"][1:]) == {"inherit"}
        # the base trained as long as an inheriting search had trained it: its start's epoch and two steps'
        assert step["base_epochs"] == 3 and list(journal["rung"])[0] == 3


@pytest.mark.slow
def test_search_on_a_two_node_cluster(bench: Bench, tmp_path: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        settings = bench.settings(tmp_path / "run", address=cluster.address)
        with _cli_process(settings, tmp_path / "cli.log") as proc:
            stdout, _ = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, (tmp_path / "cli.log").read_text()
    finally:
        cluster.shutdown()
    summary = json.loads(stdout)
    assert summary["trials"] == 4 and summary["run_dir"] == settings.out
    frame = load_run(settings.out)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"} and frame["node"].notna().all()
    assert list(frame["init"][1:]) == ["inherit"] * 3  # both nodes found the start's weights
    # Each node has one CPU and each trial needs one: trials that overlap in time ran on both nodes.
    spans = sorted(zip(frame["started"], frame["ended"]))
    assert any(start < end for (_, end), (start, _) in zip(spans, spans[1:]))
    _check_completed(settings.out, bench.target)


def test_candidates_get_the_data_s_class_count(bench: Bench, tmp_path: Path) -> None:
    # a space written for Kinetics-400 searching a 3-class dataset: every classifier gets 3 outputs
    space = tmp_path / "space400.yaml"
    space.write_text(yaml.safe_dump(dict(SPACE, start=dict(SPACE["start"], num_classes=400))))
    session = Session(resolve(bench.settings(tmp_path / "run", space=str(space))))
    assert session.space.start.num_classes == 3
    assert RunDir(tmp_path / "run").settings()["space_resolved"]["start"]["num_classes"] == 3


def test_the_schedule_s_tie_rules_reach_the_search_and_the_step(bench: Bench, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import x3dsearch.runner as runner
    schedule = tmp_path / "ties.yaml"
    schedule.write_text(yaml.safe_dump(dict(SCHEDULE, fewer_params_within=0.02, longer_window_ties=True)))
    seen: list[dict[str, Any]] = []

    def record(*args: Any, **kwargs: Any) -> None:  # stops before anything trains (Ray starts with the first trial)
        seen.append(kwargs)
        raise RuntimeError("recorded")

    monkeypatch.setattr(runner, "run_search", record)
    monkeypatch.setattr(runner, "score_start", lambda *args: None)
    monkeypatch.setattr(runner, "take_step", record)
    start = load_space(bench.root / "space.yaml").start
    for run in (lambda s: run_expand(s, quiet=True), lambda s: runner.run_step(s, start, quiet=True)):
        with pytest.raises(RuntimeError, match="recorded"):
            run(bench.settings(tmp_path / f"run{len(seen)}", proxy_schedule=str(schedule)))
    assert [k["ties"] for k in seen] == [Ties(0.02, longer_window=True)] * 2


def test_weights_folder_is_absolute_for_a_relative_run_directory(bench: Bench, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray workers run in their own folders: a relative RUN_DIR/weights would be a different folder there
    monkeypatch.chdir(tmp_path)
    session = Session(resolve(bench.settings(Path("relative-run"))))
    assert session.weights_dir.is_absolute() and session.weights_dir == (tmp_path / "relative-run" / "weights")
    assert session.weights_dir.is_dir()


def test_a_record_ranks_by_top1_or_by_minus_its_val_nll() -> None:
    record = TrialRecord("k", {}, 1, "spatial", "expand", 1.0, 0.1, 10, None, Status.OK, top1=0.4,
                         metrics={"val": {"top1": 0.4, "nll": 1.7}})
    assert _outcome(record).rank == 0.4 and _outcome(record).score is None
    assert (_outcome(record, "nll").rank, _outcome(record, "nll").top1) == (-1.7, 0.4)
    older = replace(record, metrics={"val": {"top1": 0.4}})  # journaled before the NLL was recorded
    assert _outcome(older, "nll").status == Status.FAILED and "NLL" in _outcome(older, "nll").reason
