"""The run spec: a run's options resolved once into objects, recorded in run.yaml as before."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from x3dsearch import data
from x3dsearch.errors import UserError
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.runspec import Budget, ExpandSettings, RunSpec, as_spec, resolve
from x3dsearch.schedule import load_schedule
from x3dsearch.space import load_space


def _data(root: Path, train: int = 12) -> Path:
    """A folder of ``train`` listed train and 4 val videos of 3 classes (none of them exists)."""
    root.mkdir()
    for split, count in (("train", train), ("val", 4)):
        (root / f"{split}.csv").write_text("".join(f"v{split}{i}.mp4 {i % 3}\n" for i in range(count)))
    return root


def test_resolve_reads_the_space_schedules_and_data_once_into_objects(tmp_path: Path) -> None:
    request = ExpandSettings(target_gflops=1.0, out=str(tmp_path / "run"), data=str(_data(tmp_path / "d")))
    spec = resolve(request)
    assert isinstance(spec.proxy, ProxyPolicy) and spec.proxy == load_schedule("cpu_proxy_fast")
    assert spec.full.recipe == load_schedule("cpu_long_full").recipe
    assert spec.space.start == load_space().start.replace(num_classes=3)
    assert spec.data.root == (tmp_path / "d").resolve() and spec.data.classes == 3
    assert spec.data.train_clips(spec.proxy.recipe.replace(train_videos=5)) == 5
    assert spec.data.train_clips(spec.proxy.recipe.replace(train_videos=None)) == 12
    assert spec.dispatch.cpus_per_trial == 1.0 and spec.workers.workers == 1
    assert as_spec(spec) is spec and as_spec(request) == spec


def test_to_dict_is_the_run_yaml_of_before(tmp_path: Path) -> None:
    request = ExpandSettings(target_gflops=1.0, out=str(tmp_path / "run"), data=str(_data(tmp_path / "d")))
    spec = resolve(request)
    extra = {"strategy": "random", "sampler": "random", "study_name": "s"}
    record = spec.to_dict(extra, "flops")
    assert list(record) == [*asdict(request), *extra, "cost", "space_resolved", "proxy", "full", "horizontal_flip",
                            "data_fingerprint"]
    assert record == dict(asdict(request), **extra, cost="flops", space_resolved=spec.space.to_dict(),
                          proxy=load_schedule("cpu_proxy_fast").to_dict(),
                          full=load_schedule("cpu_long_full").to_dict(), horizontal_flip=True,  # no augment.json
                          data_fingerprint=data.fingerprint(tmp_path / "d"))


def test_a_dry_run_renders_no_data_and_says_what_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "default_dataset", lambda: pytest.fail("a dry run rendered the benchmark"))
    spec = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run")), dry_run=True)
    assert spec.data.root is None and spec.data.train_videos is None and "data_fingerprint" not in spec.to_dict()
    lines = spec.describe()
    assert lines[0].startswith("data: the synthetic benchmark") and lines[1].startswith("window limit: 4 s")
    assert lines[2].startswith("schedules: proxy cpu_proxy_fast (") and lines[3].endswith("(new)")
    assert " from scratch; seed 0" in lines[2]  # the default final training
    inherit = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run"), final_init="inherit"), dry_run=True)
    assert " from the proxy weights; seed 0" in inherit.describe()[2]
    assert " from scratch; seed 0" in inherit.describe(expansion=False)[2]  # sampled models have no proxy weights


def test_starting_at_keeps_the_data_classes(tmp_path: Path) -> None:
    spec = resolve(ExpandSettings(target_gflops=1.0, out=str(tmp_path / "run"), data=str(_data(tmp_path / "d"))))
    moved = spec.starting_at(load_space().start.replace(width=3.0))
    assert moved.space.start.width == 3.0 and moved.space.start.num_classes == 3
    assert isinstance(moved, RunSpec) and moved.proxy is spec.proxy


def test_budget_in_gflops_or_ms() -> None:
    assert Budget(6.0).text() == "6 GFLOPs" and Budget(6.0).ceiling() == 12.0 and Budget(6.0).unit_suffix == "g"
    latency = Budget(None, 40.0, latency_threads=2)
    assert latency.target == 40.0 and latency.text() == "40 ms per clip (cpu, batch 1, 2 threads)"
    assert Budget(1.0, ceiling_gflops=1.5).ceiling() == 1.5
    with pytest.raises(UserError, match="needs a target"):
        Budget(None).target


@pytest.mark.parametrize("own, expected", [(60.0, 60.0), (600.0, 120.0), (None, 120.0)])
def test_the_window_limit_is_the_smaller_of_the_space_and_the_data(tmp_path: Path, own, expected) -> None:
    space = load_space()
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(dict(space.to_dict(), **({} if own is None else {"max_window": own}))))
    spec = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run"), space=str(path)), dry_run=True)
    assert spec.space.max_window == expected  # the benchmark's 4-s videos hold 120 source frames
    window_line = next(line for line in spec.describe() if line.startswith("window limit:"))
    assert window_line.endswith("(the search space's max_window)") == (expected == own)  # says which limit won


def test_a_dry_run_names_the_parsimony_tie_break(tmp_path: Path) -> None:
    spec = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run"), proxy_schedule="cpu_proxy_lean"),
                   dry_run=True)
    assert spec.describe()[2].startswith("schedules: proxy cpu_proxy_lean (1-16 epochs by step cost over all train "
                                         "videos, adamw, near-ties within 0.02 top-1 to the fewest parameters), ")
    window = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run"), proxy_schedule="cpu_proxy_window"),
                     dry_run=True).describe()[2]
    assert "near-ties within 0.02 top-1 to the fewest parameters, then the longer window), " in window
    plain = resolve(ExpandSettings(target_gflops=6.0, out=str(tmp_path / "run"), proxy_schedule="cpu_proxy"),
                    dry_run=True).describe()[2]
    assert "near-ties" not in plain
