import math
from dataclasses import replace

import pytest
import yaml

from x3dsearch import ConfigError, count_flops, expand, preset
from x3dsearch.space import AXES, bounded_step, box_top, candidates, crossed_bound, load_space, window


def test_shipped_space_has_the_six_paper_axes():
    space = load_space("x3d_kinetics")
    assert tuple(space.axes) == AXES
    assert space.start == preset("X2D")


def test_each_operator_roughly_doubles_cost():
    base = preset("XS")
    ratios = {axis: count_flops(c) / count_flops(base) for axis, c in candidates(base, load_space()).items()}
    for axis in ("fast", "temporal", "spatial", "depth", "bottleneck"):
        assert 1.6 < ratios[axis] < 2.6, (axis, ratios[axis])
    # the paper's x2 width step doubles both sides of every pointwise conv: about 4x
    assert 3.0 < ratios["width"] < 4.2


def test_operator_semantics():
    base = preset("X2D").replace(frames=4, stride=8)
    fast = expand(base, "fast")
    assert (fast.frames, fast.stride) == (8, 4)  # same duration, double frame rate
    temporal = expand(base, "temporal")
    assert (temporal.frames, temporal.stride) == (8, 6)  # 1.5x longer window
    assert expand(base, "spatial").crop == 160
    assert expand(preset("X2D"), "depth").depth == 2.2
    assert expand(preset("X2D"), "width").width == 2.0
    assert expand(preset("X2D"), "bottleneck").bottleneck == 2.25


def test_x2d_to_xs_by_expansion():
    config = preset("X2D")
    for axis in ("temporal", "fast", "spatial", "width", "bottleneck", "depth"):
        config = expand(config, axis)
    xs = preset("XS")
    assert (config.frames, config.crop, config.width, config.bottleneck, config.depth) == \
        (xs.frames, xs.crop, xs.width, xs.bottleneck, xs.depth)
    assert count_flops(config) == count_flops(xs)


def test_partial_step_between_identity_and_full_step():
    base = preset("M")
    half = expand(base, "depth", fraction=0.5)
    assert half.depth == pytest.approx(2.2 * math.sqrt(2.2), rel=1e-5)
    assert count_flops(base) < count_flops(half) < count_flops(expand(base, "depth"))


def test_unknown_axis_and_bad_fraction():
    with pytest.raises(ConfigError, match="unknown axis 'colour'"):
        expand(preset("X2D"), "colour")
    with pytest.raises(ConfigError, match="fraction"):
        expand(preset("X2D"), "width", fraction=1.5)


@pytest.mark.parametrize("text, message", [
    ("name: a\naxes: {width: {width: 2}}\n", "missing field(s) start"),
    ("name: a\nstart: X2D\naxes: {w: {colour: 2}}\n", "unknown field 'colour'"),
    ("name: a\nstart: X2D\naxes: {w: {width: 0.5}}\n", "does not increase the cost"),
    ("name: a\nstart: Q\naxes: {w: {width: 2}}\n", "unknown preset"),
    ("name: a\nstart: X2D\naxes: {w: {width: 2}}\nstep_cost: 1\n", "step_cost must be a number > 1"),
    ("name: a\nstart: X2D\naxes: {w: {width: 2}}\nstep_cost: two\n", "step_cost must be a number > 1"),
    ("name: a\nstart: X2D\naxes: {w: {width: .inf}}\n", "multiplier of width must be a finite number > 0, got inf"),
    ("name: a\nstart: X2D\naxes: {w: {width: 2}}\nbound: {crop: [112, 320]}\n", "unknown key(s) bound"),
])
def test_bad_space_files(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_space(path)


BASES = [(1, 16), (2, 12), (4, 9), (8, 7), (16, 5), (16, 3), (32, 2), (13, 6), (5, 11), (45, 3)]
FRACTIONS = [i / 20 for i in range(1, 21)]


@pytest.mark.parametrize("frames, stride", BASES)
@pytest.mark.parametrize("axis, growth", [("fast", 1.0), ("temporal", 1.5)])
def test_a_partial_time_step_keeps_its_window_within_one_stride(frames, stride, axis, growth):
    base = preset("X2D").replace(frames=frames, stride=stride)
    for fraction in FRACTIONS:
        step = expand(base, axis, fraction)
        wanted = frames * stride * growth ** fraction  # fast keeps the window, temporal grows it 1.5x a step
        assert abs(window(step) - wanted) <= step.stride / 2 + 1e-9, (fraction, step.short)
        assert step.frames >= frames and step.stride <= stride


def test_the_landing_fast_step_from_32x2_keeps_the_window():
    base = preset("X2D").replace(frames=32, stride=2, width=4.0, depth=2.2)
    steps = {expand(base, "fast", f / 100) for f in range(1, 101)}
    assert {(s.frames, s.stride) for s in steps} == {(32, 2), (64, 1)}  # never 45x1: 1.5 s of a 2.1 s window


@pytest.mark.parametrize("frames, stride", [(4, 8), (8, 4), (16, 3), (16, 5), (8, 7), (2, 16)])
def test_full_fast_and_temporal_steps_differ(frames, stride):
    base = preset("X2D").replace(frames=frames, stride=stride)
    fast, temporal = expand(base, "fast"), expand(base, "temporal")
    assert fast != temporal and window(fast) < window(temporal)
    if (frames, stride) == (16, 3):
        assert (fast.short.split()[0], temporal.short.split()[0]) == ("24x2", "36x2")  # both were 32x2


BOX = replace(load_space(), max_window=120.0)


def _inside(config, space):
    """Every field within the space's bounds and the window within its limit."""
    return (all(low <= getattr(config, name) <= high for name, (low, high) in space.bounds.items())
            and window(config) <= space.max_window)


@pytest.mark.parametrize("base", [preset("X2D"), preset("XS"), preset("M"), preset("L"),
                                  preset("X2D").replace(frames=12, stride=3, crop=224, width=3.5, bottleneck=3.0,
                                                        depth=4.84),
                                  preset("X2D").replace(frames=8, stride=15)])
def test_bounded_steps_never_leave_the_box_and_a_cut_step_names_its_bound(base):
    assert _inside(base, BOX)
    for axis in BOX.axes:
        config, fraction, bound = bounded_step(base, axis, BOX)
        assert _inside(config, BOX), (axis, config.short)
        assert (fraction == 1) == (bound == "") or fraction == 0
        assert (config == base) == (fraction == 0)
        if 0 < fraction < 1:  # the step is cut at the bound: the full one crossed it
            assert crossed_bound(base, expand(base, axis, space=BOX), BOX) == bound


def test_an_axis_at_its_bound_has_no_step_and_a_crossing_step_stops_at_the_bound():
    m = preset("M")  # 16x5 224px w2 b2.25 d2.2
    assert bounded_step(m, "temporal", BOX) == (m, 0.0, "frames <= 16")
    config, fraction, bound = bounded_step(m.replace(width=3.0), "width", BOX)
    assert config.width == 4.0 and fraction == pytest.approx(math.log2(4 / 3)) and bound == "width <= 4"
    config, fraction, bound = bounded_step(m.replace(frames=6, stride=14), "temporal", BOX)
    assert bound == "window <= 120 frames" and 0 < fraction < 1 and 84 < window(config) <= 120
    assert bounded_step(preset("X2D").replace(frames=4, stride=1), "fast", BOX)[1:] == (0.0, "")  # stride 1


@pytest.mark.parametrize("base", [preset("X2D"), preset("XS"), preset("M")])
def test_step_cost_cuts_only_the_steps_that_cost_more_and_survives_the_yaml_round_trip(base, tmp_path):
    capped = replace(BOX, step_cost=2.0)
    for axis in BOX.axes:
        free, free_fraction, free_bound = bounded_step(base, axis, BOX)
        config, fraction, bound = bounded_step(base, axis, capped)
        if count_flops(free) <= 2.0 * count_flops(base):
            assert (config, fraction, bound) == (free, free_fraction, free_bound), axis
        else:  # the largest partial step under twice the base's cost, named as a bound
            assert 0 < fraction < free_fraction and bound == "cost <= 2x its base", axis
            assert 1.5 * count_flops(base) < count_flops(config) <= 2.0 * count_flops(base), axis
    assert bounded_step(base, "width", capped)[2] == "cost <= 2x its base"  # x2 width costs about 3-4x
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(replace(capped, max_window=None).to_dict()))  # the data sets max_window
    assert load_space(path) == replace(capped, max_window=None) and "step_cost" not in BOX.to_dict()
    path.write_text(yaml.safe_dump(capped.to_dict()))
    assert load_space(path) == capped  # a space that sets its own window limit keeps it


@pytest.mark.parametrize("value", [0, -4, "long", True])
def test_a_bad_max_window_is_a_one_line_error(value, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(dict(load_space().to_dict(), max_window=value)))
    with pytest.raises(ConfigError, match="max_window must be a number of source frames > 0"):
        load_space(path)


def test_box_top_stops_at_every_bound_or_once_it_has_enough():
    top = box_top(BOX, math.inf)
    assert _inside(top, BOX) and (top.frames, top.crop, top.width, top.bottleneck) == (16, 320, 4.0, 4.0)
    assert all(bounded_step(top, axis, BOX)[1] == 0 for axis in BOX.axes)
    unbounded = replace(BOX, bounds=None, max_window=None)
    assert 1e9 <= count_flops(box_top(unbounded, 1e9)) < count_flops(top)
