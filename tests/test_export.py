"""Export to x3dsearch/PySlowFast/pytorchvideo and import from PySlowFast: round trips and refusals."""

import json
import shutil

import pytest
import torch
import yaml

from test_report import FULL_SCHEDULE, HALVING, make_run, read_journal, top_rung_scores
from x3dsearch.cli import main
from x3dsearch.config import X3DConfig, preset
from x3dsearch.cost import count_flops, count_params
from x3dsearch.errors import ConfigError
from x3dsearch.export import export, export_config, select_config
from x3dsearch.pyslowfast_format import from_pyslowfast, to_pyslowfast
from x3dsearch.pytorchvideo_format import CREATE_X3D_SIGNATURE, to_pytorchvideo
from x3dsearch.model import build_model
from x3dsearch.schedule import load_schedule

FOUND = X3DConfig(frames=6, stride=7, crop=176, width=2.45, bottleneck=1.8, depth=3.1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("export"), target=0.3)


@pytest.fixture(scope="module")
def inherited_run(tmp_path_factory):
    """A run whose proxy inherited weights, halved over rungs and repeated close calls; its final inherited too."""
    return make_run(tmp_path_factory.mktemp("export"), target=0.3, proxy=HALVING, init="inherit")


def test_own_format_rebuilds_the_same_network_with_weights(run_dir, tmp_path):
    out = tmp_path / "found.yaml"
    assert main(["export", str(run_dir), "--format", "x3dsearch", "-o", str(out)]) == 0
    config = X3DConfig.from_yaml(out)
    final = X3DConfig.from_dict(json.loads((run_dir / "path.json").read_text())["final"]["config"])
    assert config == final and count_flops(config) == count_flops(final)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == count_params(final)
    model.load_state_dict(torch.load(out.with_suffix(".pt")))  # the trained weights fit the exported config
    step = tmp_path / "step2.yaml"
    assert main(["export", str(run_dir), "--step", "2", "--format", "x3dsearch", "-o", str(step)]) == 0
    steps = json.loads((run_dir / "path.json").read_text())["steps"]
    assert X3DConfig.from_yaml(step).to_dict() == steps[1]["config"] and not step.with_suffix(".pt").exists()


def test_best_under_gflops(run_dir):
    ok = [r for r in read_journal(run_dir) if r["status"] == "ok" and r["gflops"] <= 0.1]
    best = max(ok, key=lambda r: r["top1"])
    assert select_config(run_dir, best_under_gflops=0.1).to_dict() == best["config"]


def test_best_under_gflops_takes_each_config_at_its_highest_rung(inherited_run, tmp_path):
    run = shutil.copytree(inherited_run, tmp_path / "run")
    journal = read_journal(run)
    scores = top_rung_scores(journal, max_gflops=0.1)
    best = max(scores, key=scores.get)
    outgrown = next(r["config_key"] for r in journal if r["config_key"] in scores and r["config_key"] != best
                    and r["rung"] > 1)
    for r in journal:  # a rung-1 score better than any other, from a config that scored lower later
        if r["config_key"] == outgrown and r["rung"] == 1:
            r["top1"] = 0.99
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in journal))
    assert select_config(run, best_under_gflops=0.1).key == best


def test_exports_say_how_the_search_found_the_config(inherited_run, tmp_path):
    out = tmp_path / "found.yaml"
    assert main(["export", str(inherited_run), "--format", "x3dsearch", "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    final = json.loads((inherited_run / "path.json").read_text())["final"]["config"]
    assert X3DConfig.from_yaml(out).to_dict() == data["model"] == final
    origin = json.loads((inherited_run / "summary.json").read_text())["final_metrics"]["origin_key"]
    search = data["search"]
    assert (search["proxy_schedule"], search["proxy_init"], search["rungs"]) == ("cpu_proxy", "inherit", "1, 2, 4")
    assert search["seed_repeats"] > 0 and search["exported"] == "the final model"
    assert (search["final_init"], search["final_origin_key"]) == ("inherit", origin)
    assert "\n# final: trained from the inherited proxy weights of step " in out.read_text()
    step = tmp_path / "step1.yaml"
    export("x3dsearch", step, run_dir=inherited_run, step=1)
    assert "final_init" not in yaml.safe_load(step.read_text())["search"] and "# final:" not in step.read_text()
    slowfast = tmp_path / "x3d.yaml"
    export("pyslowfast", slowfast, run_dir=inherited_run)
    text = slowfast.read_text()
    assert "\n# proxy: schedule cpu_proxy (4 epochs); weights inherited along the path (" in text
    assert "rungs of 1, 2, 4 epochs" in text and from_pyslowfast(slowfast).to_dict() == final
    kwargs = tmp_path / "x3d.json"
    export("pytorchvideo", kwargs, run_dir=inherited_run)
    assert json.loads(kwargs.read_text())["search"]["final_origin_key"] == origin


@pytest.mark.parametrize("config", [preset("XS"), preset("M"), preset("XL"), FOUND],
                         ids=["XS", "M", "XL", "found"])
def test_pyslowfast_round_trip(config, tmp_path):
    out = tmp_path / "x3d.yaml"
    export_config(config, "pyslowfast", out, schedule=FULL_SCHEDULE)
    assert from_pyslowfast(out) == config
    assert from_pyslowfast(out.read_text()) == config
    data = yaml.safe_load(out.read_text())
    assert data["MODEL"]["ARCH"] == "x3d" and data["X3D"]["DIM_C1"] == 12 and data["X3D"]["DIM_C5"] == 2048
    assert data["DATA"]["NUM_FRAMES"] == config.frames and data["DATA"]["SAMPLING_RATE"] == config.stride
    assert data["SOLVER"]["MAX_EPOCH"] == 30 and data["SOLVER"]["LR_POLICY"] == "cosine"
    assert data["TRAIN"]["BATCH_SIZE"] == 16


def test_pyslowfast_matches_the_published_m_config():
    data, warnings = to_pyslowfast(preset("M"))
    assert warnings == [] and "SOLVER" not in data
    assert data["DATA"]["TRAIN_JITTER_SCALES"] == [256, 320] and data["DATA"]["TRAIN_CROP_SIZE"] == 224
    assert data["X3D"] == {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25, "DIM_C1": 12,
                           "DIM_C5": 2048, "SCALE_RES2": False, "CHANNELWISE_3x3x3": True, "BN_LIN5": False}


def test_pyslowfast_version_warning_for_unrounded_widths():
    _, warnings = to_pyslowfast(preset("XL"))
    assert len(warnings) == 1 and "[35, 35, 70, 139, 278] instead of [32, 32, 72, 136, 280]" in warnings[0]


def test_preset_export_uses_the_kinetics_schedule(tmp_path, capsys):
    out = tmp_path / "X3D_S.yaml"
    assert main(["export", "--preset", "S", "--format", "pyslowfast", "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["SOLVER"]["MAX_EPOCH"] == 256 and data["SOLVER"]["BASE_LR"] == pytest.approx(1.6)
    assert data["TRAIN"]["BATCH_SIZE"] == 1024 and from_pyslowfast(out) == preset("S")


def test_pyslowfast_export_carries_the_default_full_recipe(tmp_path):
    """The default full schedule trains with AdamW at lr 0.003 for 8 epochs: the export must say so."""
    full = load_schedule("cpu_full").recipe
    out = tmp_path / "x3d.yaml"
    export_config(FOUND, "pyslowfast", out, schedule=full.to_dict())
    solver = yaml.safe_load(out.read_text())["SOLVER"]
    assert (full.optimizer, full.base_lr, full.epochs) == ("adamw", 0.003, 8)
    assert solver["OPTIMIZING_METHOD"] == "adamw" and solver["MAX_EPOCH"] == 8
    assert solver["BASE_LR"] == pytest.approx(0.003) and solver["MOMENTUM"] == 0.9


def test_config_file_exports_as_the_preset_it_holds(tmp_path):
    preset("M").to_yaml(tmp_path / "m.yaml")
    by_file, by_name = tmp_path / "file.yaml", tmp_path / "name.yaml"
    assert main(["export", "--config", str(tmp_path / "m.yaml"), "--format", "pyslowfast", "-o", str(by_file)]) == 0
    assert main(["export", "--preset", "M", "--format", "pyslowfast", "-o", str(by_name)]) == 0
    assert by_file.read_text() == by_name.read_text() and from_pyslowfast(by_file) == preset("M")


def test_pytorchvideo_kwargs_complete_and_typed(tmp_path):
    out = tmp_path / "x3d.json"
    export_config(FOUND, "pytorchvideo", out)
    data = json.loads(out.read_text())
    kwargs, omitted = data["kwargs"], data["omitted_callables"]
    assert set(kwargs) | set(omitted) == set(CREATE_X3D_SIGNATURE) and not set(kwargs) & set(omitted)
    for name, value in kwargs.items():
        expected = CREATE_X3D_SIGNATURE[name]
        assert expected is not None and isinstance(value, expected) and not (expected is int and
                                                                             isinstance(value, bool)), name
    assert all(CREATE_X3D_SIGNATURE[name] is None for name in omitted)
    assert kwargs["input_clip_length"] == 6 and kwargs["input_crop_size"] == 176
    assert kwargs["width_factor"] == 2.45 and kwargs["head_activation"] is None
    assert kwargs["stage_conv_kernel_size"] == [[3, 3, 3]] * 4 and "_note" in data


def test_inexpressible_config_names_the_fields():
    odd = FOUND.replace(stage_blocks=(1, 3, 5, 3), se_ratio=0.125)
    with pytest.raises(ConfigError, match=r"stage_blocks \[1, 3, 5, 3\].*se_ratio 0.125"):
        to_pyslowfast(odd)
    with pytest.raises(ConfigError, match="stage_blocks"):
        to_pytorchvideo(odd)
    assert to_pytorchvideo(FOUND.replace(se_ratio=0.125))[1] == []  # create_x3d takes se_ratio
    with pytest.raises(ConfigError, match="stem_width 10"):
        to_pyslowfast(FOUND.replace(stem_width=10))
    assert to_pyslowfast(FOUND.replace(stem_width=16, head_width=1024))[0]["X3D"]["DIM_C1"] == 16
    forced, warnings = to_pyslowfast(odd, force=True)
    assert any("stage_blocks" in w for w in warnings) and any("se_ratio" in w for w in warnings)
    assert forced["X3D"]["DIM_C1"] == 12


def test_cli_refusal_and_force(tmp_path, capsys):
    run = make_run(tmp_path, target=0.05, final=False)
    path = json.loads((run / "path.json").read_text())
    path["final"]["config"]["stage_blocks"] = [1, 2, 4, 3]
    (run / "path.json").write_text(json.dumps(path))
    out = tmp_path / "x.yaml"
    assert main(["export", str(run), "--format", "pyslowfast", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stage_blocks [1, 2, 4, 3]" in err and "--force" in err and not out.exists()
    assert main(["export", str(run), "--format", "pyslowfast", "-o", str(out), "--force"]) == 0
    assert "warning: stage_blocks" in capsys.readouterr().err
    assert "# WARNING: stage_blocks" in out.read_text()
    assert main(["export", "--format", "x3dsearch", "-o", str(out)]) == 2
    assert "RUN_DIR or a model (--preset NAME or --config FILE)" in capsys.readouterr().err


def test_import_rejects_unsupported_values():
    with pytest.raises(ConfigError, match=r"MODEL.ARCH: 'slowfast'"):
        from_pyslowfast("MODEL:\n  ARCH: slowfast\n")
    with pytest.raises(ConfigError, match="X3D.BN_LIN5"):
        from_pyslowfast("X3D:\n  BN_LIN5: true\n")
    with pytest.raises(ConfigError, match="DIM_C1 10"):
        from_pyslowfast("X3D:\n  DIM_C1: 10\n")
    with pytest.raises(ConfigError, match="not found"):
        from_pyslowfast("missing.yaml")
    assert from_pyslowfast("MODEL:\n  NUM_CLASSES: 600\n").num_classes == 600


def test_an_export_path_under_a_file_is_one_user_error(tmp_path):
    from x3dsearch.errors import UserError

    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(UserError, match="cannot write .*afile"):
        export_config(preset("XS"), "x3dsearch", tmp_path / "afile" / "found.yaml")
    with pytest.raises(UserError, match="cannot copy the weights: .*missing.pt is not a file"):
        export_config(preset("XS"), "x3dsearch", tmp_path / "found.yaml", weights=tmp_path / "missing.pt")
    assert not (tmp_path / "found.yaml").exists()  # refused before anything is written
