"""experiments/early_ranking.py: rank correlation of each epoch's training loss with the final test top-1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "early_ranking.py"
_SPEC = importlib.util.spec_from_file_location("early_ranking", _PATH)
early_ranking = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(early_ranking)


def _write(root: Path, name: str, crop: int, test: float, losses: list[float], status: str = "ok",
           schedule: str = "cpu_full_16") -> None:
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps({
        "status": status, "config": {"crop": crop, "frames": 16}, "test": {"top1": test}, "epoch_losses": losses,
        "schedule": schedule}))


def test_seeds_average_and_rho_follows_the_losses(tmp_path: Path) -> None:
    _write(tmp_path, "a-seed0", 112, 0.5, [2.0, 1.0])
    _write(tmp_path, "a-seed1", 112, 0.7, [2.2, 1.2])  # same config: averaged to 0.6, losses 2.1 and 1.1
    _write(tmp_path, "b-seed0", 160, 0.7, [1.9, 1.5])
    _write(tmp_path, "c-seed0", 224, 0.8, [1.8, 1.8])
    _write(tmp_path, "d-seed0", 320, 0.9, [1.0, 1.0], status="diverged")  # not ok: left out
    table = early_ranking.curves(tmp_path)
    assert len(table) == 3
    assert table.set_index("crop").loc[112, "test_top1"] == pytest.approx(0.6)
    assert table.set_index("crop").loc[112, "loss1"] == pytest.approx(2.1)
    rho = early_ranking.rho(table)
    assert rho[1] == pytest.approx(1.0)  # epoch 1's loss falls as the test top-1 rises
    assert rho[2] == pytest.approx(-1.0)  # epoch 2's rises with it


def test_only_the_schedule_and_the_models_a_results_csv_names_count(tmp_path: Path) -> None:
    for name, crop, schedule in [("a", 112, "cpu_full_16"), ("b", 160, "cpu_long_full"), ("c", 224, "cpu_full"),
                                 ("d", 320, "cpu_full_16")]:
        _write(tmp_path, name, crop, 0.5, [2.0], schedule=schedule)
    results = tmp_path / "results.csv"
    results.write_text("name,config\n"
                       'expand,"{""frames"": 16, ""crop"": 112}"\n'
                       'expand,"{""crop"": 224, ""frames"": 16}"\n'
                       'random,"{""crop"": 320, ""frames"": 16}"\n')
    assert sorted(early_ranking.curves(tmp_path)["crop"]) == [112, 160, 320]  # cpu_full's training left out
    assert sorted(early_ranking.curves(tmp_path, ["cpu_full"])["crop"]) == [224]
    chosen = early_ranking.configs_of(results, ["expand"])
    assert list(early_ranking.curves(tmp_path, configs=chosen)["crop"]) == [112]  # 224 only under cpu_full
    with pytest.raises(SystemExit, match="no rows named optuna"):
        early_ranking.configs_of(results, ["optuna"])
