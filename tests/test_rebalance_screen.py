"""experiments/rebalance_screen.py: the trades around a found model (one axis back, another on to its cost)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

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
