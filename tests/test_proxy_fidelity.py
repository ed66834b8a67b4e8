"""experiments/proxy_fidelity.py's metrics: Kendall's tau-b and how a proxy's choice is judged.

The runs themselves (reference trainings, proxy steps) take CPU-hours; the script's docstring says
how to run them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "proxy_fidelity.py"
_SPEC = importlib.util.spec_from_file_location("proxy_fidelity", _PATH)
proxy_fidelity = importlib.util.module_from_spec(_SPEC)
sys.modules["proxy_fidelity"] = proxy_fidelity
_SPEC.loader.exec_module(proxy_fidelity)

_REFERENCE = {"fast": 0.50, "temporal": 0.60, "spatial": 0.40, "depth": 0.30}


def test_kendall_tau_counts_concordant_pairs_and_ties_as_tau_b() -> None:
    assert proxy_fidelity.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert proxy_fidelity.kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    # one discordant pair of six: (5 - 1) / 6
    assert proxy_fidelity.kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(4 / 6)
    # a tie on one side: 5 concordant pairs, the tied one left out of that side's count: 5 / sqrt(5 * 6)
    assert proxy_fidelity.kendall_tau([1, 1, 3, 4], [10, 20, 30, 40]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(proxy_fidelity.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_judge_ranks_the_best_scored_axis_against_the_reference() -> None:
    scores = {"fast": 0.45, "temporal": 0.44, "spatial": 0.30, "depth": 0.20}  # only the top two swapped
    judged = proxy_fidelity.judge(scores, _REFERENCE)
    assert judged["tau"] == pytest.approx(4 / 6)
    assert judged["winner_rank"] == 2  # fast is the reference's second
    assert judged["regret"] == pytest.approx(10.0)  # 60% - 50%, in points


def test_judge_takes_the_step_s_own_choice_and_ranks_a_failed_candidate_last() -> None:
    scores = {"fast": 0.45, "temporal": None, "spatial": 0.30, "depth": 0.20}
    judged = proxy_fidelity.judge(scores, _REFERENCE, chosen="temporal")
    assert judged["winner_rank"] == 1 and judged["regret"] == 0.0
    # temporal (failed) counts as the lowest score: 3 of its pairs discordant, the other 3 concordant
    assert judged["tau"] == pytest.approx(0.0)


def test_convergence_compares_the_rankings_of_two_lengths_and_their_top_two() -> None:
    short = {"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3}
    assert proxy_fidelity.convergence(short, {"a": 0.7, "b": 0.65, "c": 0.5, "d": 0.45}) == (1.0, True)
    tau, kept = proxy_fidelity.convergence(short, {"a": 0.7, "b": 0.6, "c": 0.65, "d": 0.4})  # b and c swap
    assert tau == pytest.approx(4 / 6) and not kept
    assert proxy_fidelity.convergence(short, {"a": 0.6, "b": 0.7, "c": 0.4, "d": 0.3})[1]  # same two, swapped


def _unmirrored(root, split):
    """A split that forbids mirrored training clips, as the reference copy's does."""
    return types.SimpleNamespace(horizontal_flip=False)


def test_a_reference_doubles_until_doubling_it_keeps_its_ranking(tmp_path, monkeypatch, capsys) -> None:
    from x3dsearch import preset

    x2d = preset("X2D", num_classes=12)
    monkeypatch.setattr(proxy_fidelity, "REFERENCE_CSV", tmp_path / "reference.csv")
    monkeypatch.setattr(proxy_fidelity, "reference_data", lambda: tmp_path)
    monkeypatch.setattr(proxy_fidelity, "read_split", _unmirrored)
    monkeypatch.setattr(proxy_fidelity, "reference_epochs", lambda base, ratio: 4)
    monkeypatch.setattr(proxy_fidelity, "candidate_sets", lambda: {"tiny": (x2d, {
        "a": x2d.replace(crop=128), "b": x2d.replace(crop=144), "c": x2d.replace(crop=160)})})
    # a > b > c at 4 epochs; b > a > c from 8 on (so 4 is not converged, 8 is)
    order = {4: {"a": 0.6, "b": 0.5, "c": 0.4}, 8: {"a": 0.6, "b": 0.7, "c": 0.4}, 16: {"a": 0.7, "b": 0.8, "c": 0.5}}
    trained = []

    def train(jobs, workers):
        trained.extend((job[1], job[4], job[5]) for job in jobs)
        with proxy_fidelity.results_writer(proxy_fidelity.REFERENCE_CSV, proxy_fidelity._REF_FIELDS) as write:
            for name, axis, _, _, seed, epochs in jobs:
                write({"set": name, "axis": axis, "key": "", "seed": seed, "epochs": epochs,
                       "top1": order[epochs][axis] + 0.01 * seed, "seconds": 1.0, "mirrored": "no"})

    monkeypatch.setattr(proxy_fidelity, "_train_references", train)
    table = proxy_fidelity.run_reference([0, 1], 6.0, 1)
    assert sorted({e for _, _, e in trained}) == [4, 8, 16] and len(trained) == 3 * 3 * 2  # each once
    assert table[("tiny", "b")] == [0.7, 0.71]  # the 8-epoch reference, the first that kept its ranking
    out = capsys.readouterr().out
    assert "tiny: reference at 4 and 8 epochs: tau +0.33, top two kept: yes: not converged" in out
    assert "tiny: reference at 8 and 16 epochs: tau +1.00, top two kept: yes: converged" in out
    trained.clear()
    assert proxy_fidelity.run_reference([0, 1], 6.0, 1, train_missing=False, converge=False)[("tiny", "b")] == [0.5,
                                                                                                               0.51]
    assert proxy_fidelity.reference_means((0, 1))["tiny"]["b"] == pytest.approx(0.705) and not trained


def test_references_trained_on_mirrored_clips_never_stand_in_for_the_others(tmp_path, monkeypatch) -> None:
    from x3dsearch import preset

    x2d = preset("X2D", num_classes=12)
    monkeypatch.setattr(proxy_fidelity, "REFERENCE_CSV", tmp_path / "reference.csv")
    monkeypatch.setattr(proxy_fidelity, "reference_epochs", lambda base, ratio: 4)
    monkeypatch.setattr(proxy_fidelity, "candidate_sets", lambda: {"tiny": (x2d, {"a": x2d.replace(crop=128),
                                                                                   "b": x2d.replace(crop=144)})})
    with proxy_fidelity.results_writer(proxy_fidelity.REFERENCE_CSV, proxy_fidelity._REF_FIELDS) as write:
        # a complete mirrored reference of seed 0 at 8 epochs, an unmirrored one of seed 1 at 4
        for axis, epochs, seed, top1, mirrored in (("a", 8, 0, 0.3, "yes"), ("b", 8, 0, 0.7, "yes"),
                                                   ("a", 4, 1, 0.5, "no"), ("b", 4, 1, 0.6, "no")):
            write({"set": "tiny", "axis": axis, "key": "", "seed": seed, "epochs": epochs, "top1": top1,
                   "seconds": 1.0, "mirrored": mirrored})
    trained = []
    monkeypatch.setattr(proxy_fidelity, "_train_references", lambda jobs, workers: trained.extend(jobs))
    monkeypatch.setattr(proxy_fidelity, "reference_data", lambda: tmp_path)
    monkeypatch.setattr(proxy_fidelity, "read_split", _unmirrored)
    # seed 0 is trained again at the minimum length (the mirrored 8-epoch rows do not count); seed 1 is kept
    assert proxy_fidelity.run_reference([0, 1], 6.0, 1, converge=False) == {("tiny", "a"): [0.5],
                                                                             ("tiny", "b"): [0.6]}
    assert sorted((job[1], job[4], job[5]) for job in trained) == [("a", 0, 4), ("b", 0, 4)]
    trained.clear()
    monkeypatch.setattr(proxy_fidelity, "reference_data", lambda: pytest.fail("mirrored trains no reference"))
    assert proxy_fidelity.reference_means((0,), mirrored=True) == {"tiny": {"a": 0.3, "b": 0.7}} and not trained
    assert proxy_fidelity.reference_means((0,)) == {}


def test_a_reference_records_whether_its_data_mirrored_and_refuses_data_that_does(tmp_path, monkeypatch) -> None:
    from x3dsearch import preset

    monkeypatch.setattr(proxy_fidelity, "REFERENCE_RUNS", tmp_path / "runs")
    monkeypatch.setattr(proxy_fidelity, "train", lambda *a, **k: types.SimpleNamespace(status="ok", top1=0.5,
                                                                                        seconds=2.0))
    monkeypatch.setattr(proxy_fidelity, "read_split", _unmirrored)
    job = ("X2D", "fast", preset("X2D", num_classes=12).to_dict(), str(tmp_path), 0, 4)
    assert proxy_fidelity._reference_job(job)["mirrored"] == "no"
    monkeypatch.setattr(proxy_fidelity, "read_split", lambda root, split: types.SimpleNamespace(horizontal_flip=True))
    assert proxy_fidelity._reference_job(job)["mirrored"] == "yes"
    monkeypatch.setattr(proxy_fidelity, "REFERENCE_CSV", tmp_path / "reference.csv")
    monkeypatch.setattr(proxy_fidelity, "reference_data", lambda: tmp_path)
    with pytest.raises(SystemExit, match="mirrors its training clips"):
        proxy_fidelity.run_reference([0], 6.0, 1)


def test_rows_are_not_appended_under_another_header(tmp_path) -> None:
    path = tmp_path / "reference.csv"
    path.write_text("set,axis,key,seed,epochs,top1,seconds\r\nX2D,fast,,0,6,0.1,1.0\r\n")  # before the column
    with pytest.raises(SystemExit, match="would not line up"):
        with proxy_fidelity.results_writer(path, proxy_fidelity._REF_FIELDS):
            pass


def test_the_reference_copy_rendered_before_augment_json_stops_mirroring(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "synthetic-small-seed11-96"
    copy.mkdir()
    (copy / "README.md").write_text("rendered before 2026-12-06")
    monkeypatch.setattr(proxy_fidelity, "cache_root", lambda: tmp_path)
    assert proxy_fidelity.reference_data() == copy
    assert json.loads((copy / "augment.json").read_text()) == {"horizontal_flip": False}


def test_a_step_run_recorded_before_augment_json_counts_as_mirrored(tmp_path) -> None:
    from x3dsearch.rundir import RunDir

    RunDir(tmp_path / "old").create({"seed": 0}, resume=False)
    RunDir(tmp_path / "new").create({"seed": 0, "horizontal_flip": False}, resume=False)
    assert proxy_fidelity.run_mirrored(tmp_path / "old") and not proxy_fidelity.run_mirrored(tmp_path / "new")
