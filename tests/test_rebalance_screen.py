"""experiments/rebalance_screen.py: the trades around a found model (one axis back, another on to its cost)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from x3dsearch.config import preset
from x3dsearch.cost import count_flops
from x3dsearch.space import load_space

_DIR = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(_DIR))  # the screen imports search_pays as a sibling script
_SPEC = importlib.util.spec_from_file_location("rebalance_screen", _DIR / "rebalance_screen.py")
rebalance_screen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rebalance_screen)


def test_backward_inverts_every_multiplier() -> None:
    space = load_space()
    back = rebalance_screen.backward(space)
    assert back.axes["spatial"]["crop"] == 1 / space.axes["spatial"]["crop"]
    assert back.axes["fast"] == {"frames": 0.5, "stride": 2.0}


def test_trades_keep_the_cost_and_move_two_axes() -> None:
    space = replace(load_space(), max_window=120)
    found = preset("S").replace(num_classes=12)  # 13x6 160 px: every axis can step back inside the bounds
    goal = count_flops(found)
    trades = rebalance_screen.trades(found, space)
    assert len(trades) >= 10
    assert found.key not in {c.key for c in trades.values()}
    assert len({c.key for c in trades.values()}) == len(trades)
    for label, config in trades.items():
        assert abs(count_flops(config) - goal) <= 0.05 * goal, label
        assert config.frames * config.stride <= 120, label
        shrunk = label[1:].split("+")[0]
        assert shrunk not in label[1:].split("+")[1:], label  # never topped up with the axis it shrank
    by_axes = {tuple(label[1:].split("+")[:2]): config for label, config in trades.items()}
    assert by_axes["temporal", "spatial"].crop > found.crop and by_axes["temporal", "spatial"].frames < found.frames
    assert by_axes["spatial", "depth"].crop < found.crop and by_axes["spatial", "depth"].depth > found.depth


def test_no_trade_steps_back_past_a_bound() -> None:
    space = load_space()
    low = preset("S").replace(num_classes=12, crop=112)  # crop at its lower bound: no trade shrinks it
    assert not any(label.startswith("-spatial") for label in rebalance_screen.trades(low, space))


def test_no_trade_costs_more_than_the_ceiling() -> None:
    space = replace(load_space(), max_window=120)
    found = preset("S").replace(num_classes=12)
    goal = count_flops(found)
    capped = rebalance_screen.trades(found, space, ceiling=goal)
    assert capped and all(count_flops(c) <= goal for c in capped.values())
    assert set(capped) < set(rebalance_screen.trades(found, space))  # some landed just over S's cost


def _table(rows: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"trade": t, "key": t, "status": "ok", "top1": top1, "train_loss": loss, "gflops": g}
                         for t, top1, loss, g in rows])


def test_a_trade_is_kept_only_when_it_beats_the_found_model_strictly() -> None:
    tied = _table([("found", 0.5, 2.6, 2.0), ("-a+b", 0.5, 2.6, 1.9), ("-c+d", 0.4, 2.5, 1.8)])
    assert rebalance_screen.pick(tied, "found", "val_top1")["trade"] == "found"  # a tie keeps the found model
    assert rebalance_screen.pick(tied, "found", "train_loss")["trade"] == "-c+d"  # the lowest loss wins
    two = _table([("found", 0.3, 2.6, 2.0), ("-a+b", 0.5, 2.6, 2.0), ("-c+d", 0.5, 2.6, 1.9)])
    assert rebalance_screen.pick(two, "found", "val_top1")["trade"] == "-c+d"  # tied trades: the cheaper
    failed = _table([("found", 0.3, 2.6, 2.0), ("-a+b", 0.9, 2.0, 2.0)]).assign(status=["ok", "failed"])
    assert rebalance_screen.pick(failed, "found", "val_top1")["trade"] == "found"


def test_the_summary_pairs_kept_and_found_per_search_seed() -> None:
    rows = pd.DataFrame([{"search_seed": s, "kind": k, "test_top1": v} for s, k, v in [
        (0, "found", 0.60), (0, "found", 0.62), (0, "kept", 0.70), (0, "kept", 0.72),
        (1, "found", 0.70), (1, "kept", 0.70)]])
    text = rebalance_screen._summary(rows)
    assert "search seed 0: found 61.0, kept 71.0, kept - found +10.0" in text
    assert "search seed 1: found 70.0, kept 70.0, kept - found +0.0" in text
    assert "kept - found 5.0 +- 5.0" in text
