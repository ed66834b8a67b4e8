import json

import pytest

from x3dsearch import ConfigError, X3DConfig, build_model, preset
from x3dsearch.config import preset_names, round_width


def test_presets_are_data_with_paper_axes():
    assert preset_names() == ["X2D", "XS", "S", "M", "L", "XL"]
    xs, m, xl = preset("XS"), preset("m"), preset("XL")
    assert (xs.frames, xs.stride, xs.crop) == (4, 12, 160)
    assert (m.frames, m.stride, m.crop, m.width, m.bottleneck, m.depth) == (16, 5, 224, 2.0, 2.25, 2.2)
    assert (xl.width, xl.depth, xl.crop) == (2.9, 5.0, 312)


def test_yaml_and_json_round_trip(tmp_path):
    config = preset("S", num_classes=7)
    path = tmp_path / "c.yaml"
    text = config.to_yaml(path)
    assert path.read_text() == text
    again = X3DConfig.from_yaml(path)
    assert again == config and again.key == config.key
    assert X3DConfig.from_dict(json.loads(config.to_json())) == config
    a, b = build_model(config), build_model(again)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


@pytest.mark.parametrize("bad, message", [
    ({"width": 0}, "width must be a positive number"),
    ({"depth": -2.2}, "depth must be a positive number"),
    ({"frames": 0}, "frames must be a positive integer"),
    ({"crop": 112.5}, "crop must be a positive integer"),
    ({"crop": "big"}, "crop must be a positive integer"),
    ({"colour": 1}, "unknown config key(s) colour"),
    ({"stage_blocks": [1, 0]}, "stage_blocks"),
    ({"frames": float("nan")}, "frames must be a positive integer, got nan"),
    ({"crop": float("inf")}, "crop must be a positive integer, got inf"),
    ({"se_ratio": "small"}, "se_ratio must be a number in [0, 1), got 'small'"),
    ({"dropout": None}, "dropout must be a number in [0, 1), got None"),
])
def test_bad_configs_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError) as err:
        X3DConfig.from_dict(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_factor_float_noise_is_canonicalised():
    assert X3DConfig(depth=2.2 * 2.2).key == X3DConfig(depth=4.84).key


def test_round_width_matches_published_rule():
    assert [round_width(w, 2.0) for w in (12, 24, 48, 96)] == [24, 48, 96, 192]
    assert round_width(96, 2.9) == 280 and round_width(12, 2.9) == 32
    assert round_width(12, 0.1) == 8


def test_a_config_path_that_is_a_folder_or_not_text_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        X3DConfig.from_yaml(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"\x80\x02\xff\xfe")
    with pytest.raises(ConfigError, match="is not a text file"):
        X3DConfig.from_yaml(tmp_path / "model.pt")


def test_yaml_files_read_exponent_floats_as_yaml_1_2_does(tmp_path):
    from x3dsearch.schedule import load_schedule

    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\nbase_lr: 1e-3\nweight_decay: 5E-5\n")
    recipe = load_schedule(path).recipe
    assert (recipe.base_lr, recipe.weight_decay) == (0.001, 5e-5)
