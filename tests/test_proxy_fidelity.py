"""experiments/proxy_fidelity.py's metrics: Kendall's tau-b and how a proxy's choice is judged.

The runs themselves (reference trainings, proxy steps) take CPU-hours; the script's docstring says
how to run them.
"""

from __future__ import annotations

import importlib.util
import math
import sys
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
