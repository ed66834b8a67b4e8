"""The proxy policy: epochs by a step's cost, rungs stretched alike, the start's epochs, the path's epochs, and
one schedule mapping split into a recipe and a policy."""

from __future__ import annotations

from typing import Any

import pytest

from x3dsearch.errors import ConfigError
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule
from x3dsearch.search import Ties

RECIPE = Recipe(name="tiny", epochs=4, batch_size=16, base_lr=0.2, ref_batch_size=16, warmup_epochs=1)
PLAIN = ProxyPolicy(RECIPE)


def policy(**fields: Any) -> ProxyPolicy:
    """A policy from one flat schedule mapping: ``RECIPE``'s fields changed or added to by ``fields``."""
    return ProxyPolicy.from_dict({**RECIPE.to_dict(), **fields})


def test_step_compute_gives_cheap_steps_more_epochs_and_stretches_the_rungs() -> None:
    proxy = policy(epochs=2, rungs=[1, 2], step_compute=600.0, max_epochs=12, warmup_epochs=0.2)
    assert proxy.for_step(1.0, 384) is proxy  # 600 / 384 GFLOP-clips is under 2 epochs: unchanged
    cheap = proxy.for_step(0.1, 384)  # ceil(600 / 38.4) = 16 epochs, capped at 12
    assert (cheap.recipe.epochs, cheap.rungs, cheap.recipe.warmup_epochs) == (12, (6, 12), pytest.approx(1.2))
    assert proxy.for_step(0.3, 384).recipe.epochs == 6 and proxy.for_step(0.3, 384).rungs == (3, 6)
    assert PLAIN.for_step(0.001, 384) is PLAIN  # no step_compute: fixed epochs
    with pytest.raises(ConfigError, match="max_epochs"):
        policy(epochs=4, max_epochs=2)
    with pytest.raises(ConfigError, match="rungs"):
        policy(epochs=4, rungs=[2, 3])


def test_epochs_under_gives_the_tiniest_steps_their_own_epochs_before_step_compute() -> None:
    proxy = policy(epochs=1, warmup_epochs=0.1, step_compute=768.0, max_epochs=2, epochs_under=[[0.02, 16], [0.05, 6]])
    assert [proxy.for_step(g, 384).recipe.epochs for g in (0.0145, 0.03, 0.5, 2.5)] == [16, 6, 2, 1]
    tiny = proxy.for_step(0.0145, 384)
    assert (tiny.max_epochs, tiny.recipe.warmup_epochs) == (16, pytest.approx(1.6))
    assert proxy.epoch_range() == (1, 16) and PLAIN.epoch_range() == (RECIPE.epochs,) * 2
    assert ProxyPolicy.from_dict(proxy.to_dict()) == proxy  # survives YAML/JSON as lists
    # to XS: the start's 2 epochs, 16 at the first step (0.015 GFLOPs), 6 at the second, 2 at the four more
    assert proxy.replace(start_epochs=2).path_epochs(0.0073, 0.605, 384) == 2 + 16 + 6 + 4 * 2
    for bad in ([[0, 3]], [[0.05, 2], [0.02, 3]], [[0.02, 1.5]], [[0.02]], "16", []):
        with pytest.raises(ConfigError, match="epochs_under must be"):
            PLAIN.replace(epochs_under=bad)


def test_start_epochs_train_the_search_start_longer() -> None:
    proxy = policy(epochs=2, rungs=[1, 2], warmup_epochs=0.2, start_epochs=12)
    start = proxy.for_start()
    assert (start.recipe.epochs, start.rungs, start.recipe.warmup_epochs) == (12, None, pytest.approx(1.2))
    assert PLAIN.for_start() is PLAIN
    with pytest.raises(ConfigError, match="start_epochs"):
        PLAIN.replace(start_epochs=0)


def test_path_epochs_add_up_what_an_inheriting_search_trained_before_the_base() -> None:
    proxy = policy(epochs=2, warmup_epochs=0.2)
    assert proxy.path_epochs(0.0073, 0.0073, 384) == 2  # the start itself: its own epochs
    assert proxy.path_epochs(0.0073, 0.605, 384) == 2 + 6 * 2  # XS: log2(83) ~ 6 doubling steps
    stepped = proxy.replace(step_compute=60.0, max_epochs=12, start_epochs=4)
    # steps at 0.015 / 0.029 / 0.058 GFLOPs: ceil(60 / (g * 384)) = 11 / 6 / 3 epochs, then 2
    assert stepped.path_epochs(0.0073, 0.12, 384) == 4 + 11 + 6 + 3 + 2
    assert proxy.for_start(7).recipe.epochs == 7 and proxy.for_start(2) is proxy


def test_ladder_is_one_rung_of_all_epochs_without_rungs_and_drops_close_calls_on_request() -> None:
    proxy = policy(epochs=4, rungs=[1, 2, 4], rung_keep=0.25, close_call=0.02, close_call_seeds=2)
    assert (proxy.ladder().epochs, proxy.ladder().keep, proxy.ladder().repeats) == ((1, 2, 4), 0.25, 2)
    assert proxy.ladder(close_calls=False).repeats == 0
    assert PLAIN.ladder().epochs == (RECIPE.epochs,)


def test_a_schedule_entry_is_one_mapping_split_into_recipe_and_policy_and_joined_again() -> None:
    proxy = load_schedule("cpu_proxy")
    assert (proxy.recipe.name, proxy.recipe.optimizer, proxy.recipe.epochs) == ("cpu_proxy", "adamw", 1)
    assert (proxy.step_compute, proxy.epochs_under, proxy.close_call_seeds) == (768.0, ((0.02, 16),), 1)
    flat = proxy.to_dict()
    assert set(Recipe().to_dict()) < set(flat) and ProxyPolicy.from_dict(flat) == proxy
    assert ProxyPolicy.from_dict(dict(flat, debug_nan_step=None)) == proxy  # as run.yaml recorded it before
    with pytest.raises(ConfigError, match="unknown key.*debug_nan_step"):
        ProxyPolicy.from_dict(dict(flat, debug_nan_step=3))


def test_rank_by_is_top1_by_default_round_trips_and_refuses_other_measures() -> None:
    proxy = load_schedule("cpu_proxy")
    assert proxy.rank_by == "top1"
    assert "rank_by" not in proxy.to_dict()  # as recorded before the field: old run.yaml files resume, digests hold
    flat = dict(proxy.to_dict(), rank_by="nll")
    assert ProxyPolicy.from_dict(flat).rank_by == "nll" and ProxyPolicy.from_dict(flat).to_dict() == flat
    assert proxy.replace(rank_by="nll").for_step(1.0, 384).rank_by == "nll"
    with pytest.raises(ConfigError, match="rank_by must be one of top1, nll"):
        proxy.replace(rank_by="loss")


def test_fewer_params_within_is_written_only_when_set() -> None:
    proxy = load_schedule("cpu_proxy")
    assert proxy.fewer_params_within == 0 and "fewer_params_within" not in proxy.to_dict()
    flat = dict(proxy.to_dict(), fewer_params_within=0.02)
    assert ProxyPolicy.from_dict(flat).to_dict() == flat
    assert proxy.replace(fewer_params_within=0.02).for_step(3.0, 384).fewer_params_within == 0.02
    with pytest.raises(ConfigError, match="fewer_params_within must be >= 0"):
        proxy.replace(fewer_params_within=-0.1)


@pytest.mark.parametrize("switch", ["lookahead", "longer_window_ties"])
def test_choice_switches_are_off_by_default_written_only_when_set_and_booleans(switch: str) -> None:
    proxy = load_schedule("cpu_proxy_lean")  # fewer_params_within 0.02: near-ties for longer_window_ties to break
    assert getattr(proxy, switch) is False and switch not in proxy.to_dict()
    flat = dict(proxy.to_dict(), **{switch: True})
    assert ProxyPolicy.from_dict(flat).to_dict() == flat
    assert getattr(proxy.replace(**{switch: True}).for_step(3.0, 384), switch) is True
    with pytest.raises(ConfigError, match=f"{switch} must be true or false"):
        proxy.replace(**{switch: "yes"})


def test_longer_window_ties_without_a_tie_margin_is_an_error() -> None:
    with pytest.raises(ConfigError, match="longer_window_ties breaks near-ties, so it needs fewer_params_within > 0"):
        load_schedule("cpu_proxy").replace(longer_window_ties=True)


def test_the_window_proxy_is_the_fast_one_with_longer_window_ties() -> None:
    fast, window = load_schedule("cpu_proxy_fast"), load_schedule("cpu_proxy_window")
    assert window.longer_window_ties and not fast.longer_window_ties
    assert (window.ties, fast.ties) == (Ties(0.02, longer_window=True), Ties(0.02))  # what the search receives
    assert window.replace(longer_window_ties=False).to_dict() == dict(fast.to_dict(), name="cpu_proxy_window",
                                                                        description=window.recipe.description)


def test_the_fast_proxy_is_the_lean_one_without_close_call_repeats() -> None:
    fast, lean = load_schedule("cpu_proxy_fast"), load_schedule("cpu_proxy_lean")
    assert (fast.close_call, fast.close_call_seeds) == (0.0, 0) and lean.close_call_seeds == 1
    assert set(fast.to_dict()) == set(lean.to_dict())
    differ = ("name", "description", "close_call", "close_call_seeds")
    same = {k: v for k, v in fast.to_dict().items() if k not in differ}
    assert same == {k: v for k, v in lean.to_dict().items() if k in same}
    assert fast.ladder().repeats == 0 and lean.ladder().repeats == 1 and fast.fewer_params_within == 0.02
