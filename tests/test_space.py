import math

import pytest

from x3dsearch import ConfigError, count_flops, expand, preset
from x3dsearch.space import AXES, candidates, load_space


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
])
def test_bad_space_files(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_space(path)
