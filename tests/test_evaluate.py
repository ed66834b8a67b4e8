"""Scoring a trained model: the confusion matrix of multi-view testing, and `x3dsearch evaluate` on a run
and on a model file, which must reproduce what the training itself scored."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from x3dsearch.cli import main
from x3dsearch.config import preset
from x3dsearch.data import make_synthetic
from x3dsearch.evaluate import Feed, score_views
from x3dsearch.rundir import RunDir
from x3dsearch.runspec import ExpandSettings
from x3dsearch.recipe import Recipe
from x3dsearch.train import train

CLASSES = ["texture-vertical", "texture-horizontal", "flicker-3.5hz", "order-h-then-v"]
CONFIG = preset("X2D", num_classes=len(CLASSES), crop=16, frames=2, stride=4, head_width=32)
SCHEDULE = Recipe(name="tiny_full", epochs=1, batch_size=4, base_lr=0.05, ref_batch_size=4, eval_views=(2, 1),
                    spatial_scale=1.0)


class Fixed(Dataset):
    """Videos of ``views`` views whose label is ``labels[i]``; the clip's first value says which class wins."""

    def __init__(self, labels: list[int], winners: list[int], views: int = 2) -> None:
        self.labels, self.winners, self.views = labels, winners, views
        self.class_names, self.groups = ["x", "y", "z"], {"xy": ["x", "y"]}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((self.views, 1), float(self.winners[i])), self.labels[i]


class Pick(nn.Module):
    """Logits favouring the class a clip names, with the runner-up the next class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        winner = x[:, 0].long()
        return nn.functional.one_hot(winner, 3) * 5.0 + nn.functional.one_hot((winner + 1) % 3, 3) * 1.0


class TwoViews(Dataset):
    """One video of class 0 whose two views name classes 0 and 1."""

    class_names, groups = ["x", "y", "z"], {}

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([[0.0], [1.0]]), 0


def test_the_nll_is_of_the_softmax_averaged_over_views() -> None:
    feed = Feed(0, 0, torch.device("cpu"), False, torch.autocast("cpu", enabled=False))
    z = math.exp(5) + math.exp(1) + 1  # each view: e^5 for its class, e for the next, 1 for the third
    nll = score_views(Pick(), TwoViews(), feed, batch_size=2, views=2).nll
    assert nll == pytest.approx(-math.log((math.exp(5) + 1) / (2 * z)))  # not the mean of the views' log-probs


def test_score_views_counts_each_video_once_in_its_row_and_predicted_column() -> None:
    feed = Feed(0, 0, torch.device("cpu"), False, torch.autocast("cpu", enabled=False))
    data = Fixed(labels=[0, 0, 1, 1, 2], winners=[0, 1, 1, 1, 0])
    scores = score_views(Pick(), data, feed, batch_size=2, views=2, split="test")
    assert scores.confusion == ((1, 1, 0), (0, 2, 0), (1, 0, 0))
    assert (scores.split, scores.videos) == ("test", 5)
    assert scores.top1 == pytest.approx(3 / 5) and scores.top5 == 1.0  # three classes: all in the top five
    assert scores.per_group() == pytest.approx({"xy": 3 / 4}) and scores.per_class()["z"] == 0.0
    # three videos give their class the winner's probability e^5/Z, two the third class's 1/Z
    log_z = math.log(math.exp(5) + math.exp(1) + 1)
    assert scores.nll == pytest.approx((3 * (log_z - 5) + 2 * log_z) / 5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose final model was really trained (1 epoch) on a tiny benchmark with a test split."""
    root = tmp_path_factory.mktemp("evaluate")
    data = make_synthetic(root / "data", seed=2, videos_per_class=2, val_per_class=2, test_per_class=3,
                          seconds=0.5, side=16, classes=CLASSES, workers=1)
    out = root / "run"
    settings = ExpandSettings(target_gflops=0.01, out=str(out), data=str(data), seed=5)
    RunDir(out).create(dict(asdict(settings), full=SCHEDULE.to_dict()), resume=False)
    result = train(CONFIG, data, SCHEDULE, seed=5, out_dir=out / "final", threads=1, test_split=True)
    assert result.status == "ok", result.reason
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "final" / "metrics.json").read_text())


def test_final_training_scored_val_and_test_with_the_data_groups(run: Path) -> None:
    metrics = _metrics(run)
    val, test = metrics["val"], metrics["test"]
    assert (val["videos"], test["videos"]) == (8, 12) and val["top1"] == metrics["top1"]
    assert val["classes"] == CLASSES and set(test["per_group"]) == {"texture", "flicker", "order"}
    assert test["groups"]["texture"] == ["texture-horizontal", "texture-vertical"]  # the benchmark's order
    assert sum(map(sum, test["confusion"])) == 12


def test_evaluate_a_run_reproduces_its_final_scores(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for split in ("val", "test"):
        assert main(["evaluate", str(run), "--split", split, "--json"]) == 0
        scored = json.loads(capsys.readouterr().out)
        expected = _metrics(run)[split]
        assert {k: scored[k] for k in expected} == expected  # same model, views, clips: same confusion matrix
        assert scored["schedule"] == "tiny_full"


def test_evaluate_a_model_file_with_its_config(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    final = run / "final"
    schedule = tmp_path / "tiny.yaml"
    schedule.write_text(yaml.safe_dump(SCHEDULE.to_dict()))
    data = RunDir(run).settings()["data"]
    args = ["evaluate", "--weights", str(final / "model.pt"), "--config", str(final / "config.yaml"),
            "--schedule", str(schedule), "--data", data, "--split", "test"]
    assert main([*args, "--per-class"]) == 0
    lines = capsys.readouterr().out.splitlines()
    test = _metrics(run)["test"]
    assert f"top-1 {test['top1']:.1%}" in lines[0] and "2x1 views at 16 px" in lines[0]
    rows = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert set(rows) == {"all", "texture", "flicker", "order", *CLASSES}
    assert rows["flicker"] == f"{test['per_group']['flicker']:.1%}"
    assert rows["texture-vertical"] == f"{test['per_class']['texture-vertical']:.1%}"
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion"] == test["confusion"]


@pytest.mark.parametrize("args, message", [
    ([], "give a RUN_DIR or --weights"),
    (["--weights", "model.pt"], "--weights needs the model's --config"),
    (["--weights", "missing.pt", "--config", "c.yaml"], "model file not found"),
])
def test_evaluate_argument_mistakes_are_one_line(args: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"")
    assert main(["evaluate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_evaluate_refuses_a_run_without_final_model_or_a_split_the_data_lacks(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unfinished = tmp_path / "unfinished"
    RunDir(unfinished).create({"full": SCHEDULE.to_dict()}, resume=False)
    assert main(["evaluate", str(unfinished)]) == 2
    assert "has no final model" in capsys.readouterr().err
    data = Path(RunDir(run).settings()["data"])
    no_test = tmp_path / "no_test"
    no_test.mkdir()
    for name in ("train.csv", "val.csv", "classes.txt"):
        (no_test / name).write_text((data / name).read_text().replace("videos/", f"{data}/videos/"))
    assert main(["evaluate", str(run), "--data", str(no_test), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no test.csv" in err


def test_an_empty_or_garbage_weights_file_or_another_class_list_is_one_line(
        run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = RunDir(run).settings()["data"]
    CONFIG.to_yaml(tmp_path / "c.yaml")
    args = ["evaluate", "--weights", str(tmp_path / "model.pt"), "--config", str(tmp_path / "c.yaml"), "--data", data]
    for content in (b"", b"garbage, not a pickle"):
        (tmp_path / "model.pt").write_bytes(content)
        assert main(args) == 2
        assert "model.pt: not a model file" in capsys.readouterr().err
    CONFIG.replace(num_classes=12).to_yaml(tmp_path / "c.yaml")
    assert main(args) == 2
    assert f"the config has 12 classes and {data} has {len(CLASSES)}" in capsys.readouterr().err
