"""The optuna strategy through a real local Ray with a stub trial: feasibility, study, journal, resume."""

import json
from dataclasses import replace
import sys
from pathlib import Path

import optuna
import pytest
import ray
import ray.cloudpickle
import yaml
from optuna.trial import TrialState

from x3dsearch.config import X3DConfig
from x3dsearch.cost import count_flops
from x3dsearch.errors import ConfigError, UserError
from x3dsearch.optuna_search import STUDY_FILE, feasible_bounds, run_optuna
from x3dsearch.rundir import load_run
from x3dsearch.schedule import load_schedule
from x3dsearch.runspec import ExpandSettings
from x3dsearch.space import SearchSpace, load_space

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TARGET = 0.05


def _stub(job):
    """Deterministic proxy 'accuracy' from the config; logs each call into the data folder."""
    with open(Path(job.data) / "calls.log", "a") as f:
        f.write(job.key + "\n")
    config = X3DConfig.from_dict(job.config)
    return {"status": "ok", "top1": round(0.2 + 0.1 * config.depth + 0.01 * config.frames, 6), "seconds": 1.5}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("train.csv", "val.csv"):
        (root / name).write_text("a.mp4 0\n")
    return root


def _settings(tmp_path, data):
    return ExpandSettings(target_gflops=TARGET, out=str(tmp_path / "run"), data=str(data), seed=3,
                          final_training=False, max_concurrent=2)


def _calls(data):
    return (data / "calls.log").read_text().splitlines()


def _study(tmp_path):
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'run' / STUDY_FILE}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path / 'run' / STUDY_FILE}")


def test_search_trains_only_feasible_proposals(local_ray, tmp_path, data):
    summary = run_optuna(_settings(tmp_path, data), 4, quiet=True, trial_fn=_stub)
    study = _study(tmp_path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert summary["trials"] == len(complete) == 4 and summary["rejected"] == len(pruned) > 0
    assert all(t.user_attrs["gflops"] > TARGET for t in pruned)
    journal = load_run(tmp_path / "run")
    assert sorted(_calls(data)) == sorted(journal["config_key"]) == sorted(
        X3DConfig.from_dict(t.user_attrs["config"]).key for t in complete)
    assert set(journal["kind"]) == {"optuna"} and set(journal["axis"]) == {"optuna"}
    assert sorted(journal["step"]) == sorted(t.number for t in complete)
    assert (journal["gflops"] <= TARGET).all()
    best = max(complete, key=lambda t: t.value)
    final = json.loads((tmp_path / "run" / "path.json").read_text())["final"]
    assert final["config"] == best.user_attrs["config"] and final["gflops"] <= TARGET
    assert final["top1"] == best.value and count_flops(X3DConfig.from_dict(final["config"])) / 1e9 <= TARGET


def test_samplers_rank_by_top1_under_a_proxy_that_ranks_by_nll(local_ray, tmp_path, data):
    schedule = tmp_path / "by_nll.yaml"  # the stub reports no NLL: ranked by it, every trial would fail
    schedule.write_text(yaml.safe_dump(dict(load_schedule("cpu_proxy").to_dict(), name="by_nll", rank_by="nll")))
    summary = run_optuna(replace(_settings(tmp_path, data), proxy_schedule=str(schedule)), 3, quiet=True,
                         trial_fn=_stub)
    assert summary["trials"] == len(_study(tmp_path).get_trials(states=(TrialState.COMPLETE,))) == 3


def test_resume_continues_the_study_and_reuses_the_journal(local_ray, tmp_path, data):
    settings = _settings(tmp_path, data)
    run_optuna(settings, 2, quiet=True, trial_fn=_stub)
    study = _study(tmp_path)
    first = study.get_trials(states=(TrialState.COMPLETE,))[0]
    interrupted = study.ask()  # as if killed after the proxy run was journaled, before tell
    interrupted.set_user_attr("config", first.user_attrs["config"])
    interrupted.set_user_attr("gflops", first.user_attrs["gflops"])
    with pytest.raises(UserError, match="--resume"):
        run_optuna(settings, 5, quiet=True, trial_fn=_stub)
    summary = run_optuna(settings, 5, resume=True, quiet=True, trial_fn=_stub)
    study = _study(tmp_path)
    assert summary["trials"] == 5
    assert study.trials[interrupted.number].state == TrialState.COMPLETE
    assert study.trials[interrupted.number].value == first.value
    assert max(t.number for t in study.trials) > interrupted.number
    assert len(_calls(data)) == 4  # 2 + 2 new; the interrupted trial came from the journal


def test_feasible_bounds_only_cut_infeasible_values():
    space = load_space()
    cut = feasible_bounds(space, TARGET)
    low = {name: b[0] for name, b in space.bounds.items()}
    for name, (_, high) in cut.items():
        if high < space.bounds[name][1]:
            step = space.crop_multiple if name == "crop" else 1 if name == "frames" else high * 1e-3
            assert count_flops(space.start.replace(**dict(low, **{name: high}))) <= TARGET * 1e9
            assert count_flops(space.start.replace(**dict(low, **{name: high + step}))) > TARGET * 1e9
    assert cut["stride"] == space.bounds["stride"] and cut["crop"][1] < space.bounds["crop"][1]
    with pytest.raises(UserError, match="below the cheapest"):
        feasible_bounds(space, 0.001)


@pytest.mark.parametrize("bad", [{"crop": [112, 300]}, {"frames": [1.5, 4]}, {"depth": [2, 1]}, {"width": None}])
def test_space_bounds_are_validated(bad):
    data = load_space().to_dict()
    data["bounds"] = dict(data["bounds"], **bad)
    with pytest.raises(ConfigError, match="bounds"):
        SearchSpace.from_dict(data)


def test_random_search_resumes_and_reads_like_an_optuna_run(local_ray, tmp_path, data):
    from x3dsearch.cli import main

    settings = _settings(tmp_path, data)
    first = run_optuna(settings, 4, sampler="random", quiet=True, trial_fn=_stub)
    summary = run_optuna(settings, 8, sampler="random", resume=True, quiet=True, trial_fn=_stub)
    assert first["strategy"] == summary["strategy"] == "random" and summary["trials"] == 8
    assert len(_study(tmp_path).get_trials(states=(TrialState.COMPLETE,))) == 8
    assert len(_calls(data)) == 8  # the resumed run trained only the 4 new trials
    journal = load_run(tmp_path / "run")
    assert len(journal) == 8 and (journal["gflops"] <= TARGET).all()
    run = str(tmp_path / "run")
    assert main(["report", run, "--format", "json"]) == 0
    assert main(["plot", run, "-o", str(tmp_path / "frontier.png")]) == 0
    assert main(["export", run, "--format", "x3dsearch", "-o", str(tmp_path / "found.yaml")]) == 0
    found = X3DConfig.from_yaml(tmp_path / "found.yaml")
    assert found.to_dict() == json.loads((tmp_path / "run" / "path.json").read_text())["final"]["config"]
    assert main(["compare", run, "-o", str(tmp_path / "compare.png")]) == 0
    assert (tmp_path / "frontier.png").stat().st_size > 0 and (tmp_path / "compare.png").stat().st_size > 0
    assert "random" in (tmp_path / "run" / "run.yaml").read_text()


def test_feasible_bounds_cut_frames_and_stride_to_the_window():
    space = replace(load_space(), max_window=30.0)
    bounds = feasible_bounds(space, 100.0)
    assert bounds["frames"] == (1, 16) and bounds["stride"] == (1, 16)  # 16 frames fit at stride 1, and back
    bounds = feasible_bounds(replace(space, max_window=12.0), 100.0)
    assert bounds["frames"] == (1, 12) and bounds["stride"] == (1, 12)
    with pytest.raises(UserError, match="no window"):
        feasible_bounds(replace(space, bounds={**space.bounds, "stride": (8, 16)}, max_window=4.0), 100.0)


def test_no_sampled_window_is_longer_than_the_videos(local_ray, tmp_path, data):
    settings = replace(_settings(tmp_path, data), target_gflops=0.3, max_window=0.5)  # 15 source frames
    summary = run_optuna(settings, 6, sampler="random", trial_fn=_stub, quiet=True)
    journal = load_run(summary["run_dir"])
    configs = [X3DConfig.from_dict(c) for c in journal["config"]]
    assert len(configs) == 6 and all(c.frames * c.stride <= 15 for c in configs)
    study = _study(tmp_path)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and all(max(t.constraints.values()) > 0 for t in pruned)  # over the target or the window
