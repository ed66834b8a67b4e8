"""The command line: parser layout, one-line user errors, dry runs."""

import argparse
import ast
import json
import shutil
from pathlib import Path

import pytest

from x3dsearch import cli, commands
from x3dsearch.cli import build_parser, main
from x3dsearch.config import preset
from x3dsearch.data import make_synthetic
from x3dsearch.data.synthetic import CLASSES
from x3dsearch.rundir import RunDir
from x3dsearch.runspec import ExpandSettings, resolve
from x3dsearch.search import step_candidates
from x3dsearch.space import load_space


def test_flops_json(capsys):
    assert main(["flops", "--preset", "XS", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == 605_256_512 and set(data["parts"]) == {"stem", "res2", "res3", "res4", "res5", "head"}
    assert sum(p["flops"] for p in data["parts"].values()) == data["flops"]


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "16x5" in out and "4.732" in out


def test_bad_config_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("frames: 0\n")
    assert main(["flops", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "frames must be a positive integer" in err
    assert main(["flops", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    """Each subcommand's parser and its one-line help in the command list."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return {name: (sub, helps.get(name)) for name, sub in action.choices.items()}


def test_every_subcommand_has_help_and_each_option_once():
    commands = _subcommands(build_parser())
    assert {"flops", "presets", "expand", "search", "compare", "train", "evaluate", "report", "plot", "export",
            "make-data"} <= set(commands)
    for name, (sub, summary) in commands.items():
        assert summary and sub.description, f"{name} has no help text"
        strings = [s for action in sub._actions for s in action.option_strings]
        repeated = sorted({s for s in strings if strings.count(s) > 1})
        assert not repeated, f"{name} repeats {repeated}"
        unexplained = [action.dest for action in sub._actions if not action.help]
        assert not unexplained, f"{name}: no help for {unexplained}"


def test_cli_declares_each_option_string_once():
    tree = ast.parse(Path(cli.__file__).read_text())
    flags = [arg.value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
             for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("-")]
    assert "--target-gflops" in flags and "--json" in flags
    assert sorted({f for f in flags if flags.count(f) > 1}) == []


def test_expand_and_search_share_the_search_options():
    parser = build_parser()
    expand = vars(parser.parse_args(["expand", "--target-gflops", "1"]))
    search = vars(parser.parse_args(["search", "--target-gflops", "1"]))
    assert {k: search[k] for k in expand if k not in ("command", "handler")} == \
        {k: v for k, v in expand.items() if k not in ("command", "handler")}
    assert (search["strategy"], search["trials"], search["sampler"]) == ("optuna", None, None)  # None: tpe
    assert expand == dict(expand, target_gflops=1.0, output=None, resume=False, data=None, space="x3d_kinetics",
                          proxy_schedule="cpu_proxy_fast", full_schedule="cpu_long_full", final_training=True, seed=0,
                          ceiling_gflops=None, evaluate_contractions=False, address=None, storage=None,
                          cpus_per_worker=1.0, gpus_per_worker=0.0, max_concurrent=None, max_failures=2,
                          dry_run=False, quiet=False, json=False)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Three classes, two train, one val and one test video each, 16 px, a fifth of a second."""
    return make_synthetic(tmp_path_factory.mktemp("cli") / "data", videos_per_class=2, val_per_class=1,
                          seconds=0.2, side=16, classes=CLASSES[:3], workers=1)


def _dry_run(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a search command with --dry-run."""
    code = main([*args, "--dry-run"])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *needles: str) -> bool:
    """Exit code 2 and a single stderr line that mentions every needle."""
    return code == 2 and err.count("\n") == 1 and all(n in err for n in needles)


@pytest.mark.parametrize("command", [["expand", "--target-gflops", "6"],
                                     ["search", "--target-gflops", "6", "--trials", "3"]])
def test_dry_run_names_a_missing_data_folder(capsys, command):
    code, out, err = _dry_run(capsys, *command, "--data", "/no/such/dir")
    assert _one_line_error(code, err, "/no/such/dir") and out == ""


@pytest.mark.parametrize("command", [["expand", "--target-gflops", "6"],
                                     ["search", "--target-gflops", "6", "--trials", "3"]])
def test_dry_run_says_what_it_found(capsys, tmp_path, tiny_data, command):
    code, out, err = _dry_run(capsys, *command, "--data", str(tiny_data), "--out", str(tmp_path / "run"))
    assert code == 0 and err == ""
    assert f"data: {tiny_data}, 3 classes, 6 train / 3 val / 3 test videos; training clips not mirrored " \
        "(augment.json)\n" in out
    assert "schedules: proxy cpu_proxy_fast (1-16 epochs by step cost over all train videos" in out and f"run directory: {tmp_path / 'run'} (new)" in out
    assert not (tmp_path / "run").exists()


def test_dry_run_plans_with_the_data_classes(capsys, tmp_path, tiny_data):
    _, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(tiny_data),
                         "--out", str(tmp_path / "run"))
    space = load_space("x3d_kinetics")
    start = space.start.replace(num_classes=3)
    width = next(c for c in step_candidates(start, space, 1) if c.axis == "width")
    assert f"{width.params:>10,} params" in out


def test_dry_run_of_default_data_does_not_render_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("X3DSEARCH_CACHE", str(tmp_path / "cache"))
    code, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--out", str(tmp_path / "run"))
    assert code == 0 and "data: the synthetic benchmark, 12 classes" in out
    assert not (tmp_path / "cache").exists()


def _broken_copy(tiny_data: Path, tmp_path: Path, csv: str, text: str | None) -> Path:
    """A copy of the tiny data whose ``csv`` holds ``text`` (None: the CSV is removed)."""
    root = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    if text is None:
        (root / csv).unlink()
    else:
        (root / csv).write_text(text)
    return root


@pytest.mark.parametrize("csv, text, needles", [
    ("val.csv", None, ["missing val.csv"]),
    ("train.csv", "videos/a.mp4 texture-horizontal\nvideos/b.mp4 no-such-class\n",
     ["train.csv:2", "'no-such-class'"]),
    ("val.csv", "nowhere/a.mp4 texture-horizontal\n", ["val.csv", "none of its 1 videos exist"]),
])
def test_dry_run_reads_the_split_csvs(capsys, tmp_path, tiny_data, csv, text, needles):
    root = _broken_copy(tiny_data, tmp_path, csv, text)
    code, _, err = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(root),
                            "--out", str(tmp_path / "run"))
    assert _one_line_error(code, err, *needles), err


def test_dry_run_counts_missing_videos(capsys, tmp_path, tiny_data):
    root = _broken_copy(tiny_data, tmp_path, "val.csv", (tiny_data / "val.csv").read_text() + "gone.mp4 0\n")
    code, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(root),
                            "--out", str(tmp_path / "run"))
    assert code == 0 and "6 train / 4 val / 3 test videos; 1 listed video missing" in out


def test_dry_run_says_when_the_final_number_will_be_on_the_selection_split(capsys, tmp_path, tiny_data):
    root = _broken_copy(tiny_data, tmp_path, "test.csv", None)
    code, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(root),
                            "--out", str(tmp_path / "run"))
    assert code == 0 and "6 train / 3 val videos; no test.csv: the final top-1 will be on val, the split the " \
        "search selects on; training clips not mirrored (augment.json)\n" in out


def test_dry_run_says_the_data_is_mirrored_without_augment_json(capsys, tmp_path, tiny_data):
    root = _broken_copy(tiny_data, tmp_path, "augment.json", None)
    code, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(root),
                            "--out", str(tmp_path / "run"))
    assert code == 0 and "6 train / 3 val / 3 test videos\n" in out and "mirrored" not in out


@pytest.mark.parametrize("option, value, needle", [
    ("--space", "nowhere.yaml", "search space file not found: nowhere.yaml"),
    ("--proxy-schedule", "no_such_schedule", "unknown schedule 'no_such_schedule'"),
    ("--full-schedule", "missing.yaml", "schedule file not found: missing.yaml"),
    ("--space", ".", "search space file . is a folder, not a file"),
    ("--ceiling-gflops", "3", "--ceiling-gflops) 3 must be at least the target (6 GFLOPs)"),
    ("--ceiling-gflops", "nan", "--ceiling-gflops) nan must be at least the target"),
    ("--max-failures", "-1", "--max-failures must be zero or more, got -1"),
    ("--gpus-per-worker", "nan", "--gpus-per-worker must be zero or more, got nan"),
    ("--cpus-per-worker", "0", "--cpus-per-worker must be positive, got 0"),
])
def test_dry_run_reads_space_and_schedules(capsys, tmp_path, tiny_data, option, value, needle):
    code, _, err = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(tiny_data),
                            "--out", str(tmp_path / "run"), option, value)
    assert _one_line_error(code, err, needle), err


@pytest.mark.parametrize("seed, needle", [("-1", "must be from 0 to 4294967295, got -1"),
                                          ("2e3", "not an integer: '2e3'")])
def test_a_seed_numpy_and_torch_cannot_take_is_a_usage_error(capsys, seed, needle):
    with pytest.raises(SystemExit) as info:
        main(["expand", "--target-gflops", "6", "--seed", seed, "--dry-run"])
    assert info.value.code == 2 and f"argument --seed: {needle}" in capsys.readouterr().err


def test_dry_run_checks_the_run_directory(capsys, tmp_path, tiny_data):
    run = RunDir(tmp_path / "run")
    recorded = resolve(ExpandSettings(6.0, str(run.path), data=str(tiny_data)), dry_run=True).to_dict()
    run.create({**recorded, "data_fingerprint": "recorded"}, resume=False)  # as a run records its settings
    args = ["expand", "--target-gflops", "6", "--data", str(tiny_data), "--out", str(run.path)]
    code, _, err = _dry_run(capsys, *args)
    assert _one_line_error(code, err, str(run.path), "--resume")
    code, out, err = _dry_run(capsys, *args, "--resume")  # the fingerprint is left to the run, which reads the videos
    assert code == 0 and f"run directory: {run.path} (resuming its 0 journal records)" in out, err
    code, _, err = _dry_run(capsys, *args, "--resume", "--seed", "1")  # refused as the run itself would refuse it
    assert _one_line_error(code, err, "--resume with different seed than the run in", "recorded seed 0")


def test_dry_run_checks_trials(capsys):
    code, _, err = _dry_run(capsys, "search", "--target-gflops", "6", "--trials", "0")
    assert _one_line_error(code, err, "--trials must be at least 1")


def _visible_flags(sub: argparse.ArgumentParser) -> set[str]:
    """The option strings a command's --help lists."""
    return {s for action in sub._actions if action.help != argparse.SUPPRESS for s in action.option_strings}


# commands whose result is data a script may read, each of which must offer --json
_MACHINE_OUTPUT = ("flops", "presets", "expand", "step", "search", "compare", "train", "report", "latency")


def test_flags_are_consistent_across_commands():
    commands = _subcommands(build_parser())
    for name, (sub, _) in commands.items():
        flags = _visible_flags(sub)
        writes = [a for a in sub._actions if a.dest == "output" and a.help != argparse.SUPPRESS]
        assert all(a.option_strings == ["-o", "--output"] for a in writes), f"{name}: output flag {writes}"
        assert not flags & {"--out", "--from", "--cpus-per-trial", "--gpus-per-trial"}, f"{name} shows an old flag"
        if "--preset" in flags or "--config" in flags:
            assert {"--preset", "--config"} <= flags, f"{name} names a model one way only"
        if {"--cpus-per-worker", "--gpus-per-worker"} & flags:
            assert {"--cpus-per-worker", "--gpus-per-worker"} <= flags, name
    writers = {name for name, (sub, _) in commands.items() if any(a.dest == "output" for a in sub._actions)}
    assert writers >= {"expand", "search", "step", "train", "compare", "plot", "export", "make-data"}
    assert all("--json" in _visible_flags(commands[name][0]) for name in _MACHINE_OUTPUT)
    assert all("--preset" in _visible_flags(commands[name][0])
               for name in ("flops", "step", "train", "export", "latency"))


@pytest.mark.parametrize("old, new", [
    (["train", "--config", "m.yaml", "--out", "runs/x"], ["train", "--config", "m.yaml", "-o", "runs/x"]),
    (["expand", "--target-gflops", "1", "--out", "r", "--cpus-per-trial", "2", "--gpus-per-trial", "1"],
     ["expand", "--target-gflops", "1", "--output", "r", "--cpus-per-worker", "2", "--gpus-per-worker", "1"]),
    (["make-data", "data/x"], ["make-data", "-o", "data/x"]),
    (["report", "r", "--format", "json"], ["report", "r", "--json"]),
    (["step", "--from", "XS"], ["step", "--preset", "XS"]),
])
def test_old_spellings_still_parse(old, new):
    parser = build_parser()
    old_args, new_args = vars(parser.parse_args(old)), vars(parser.parse_args(new))
    if old[0] == "report":  # the two spellings of JSON output differ in the namespace, not in the result
        assert (old_args["format"], new_args["json"]) == ("json", True)
    elif old[0] == "step":
        assert commands.model_from_args(parser.parse_args(old)) == commands.model_from_args(parser.parse_args(new))
    else:
        assert old_args == new_args


def test_step_from_reads_a_config_file(tmp_path):
    path = tmp_path / "m.yaml"
    preset("S").to_yaml(path)
    assert commands.model_from_args(build_parser().parse_args(["step", "--from", str(path)])) == preset("S")


@pytest.mark.parametrize("schedule, noted", [("experiments/schedules/cpu_proxy_lean_lookahead.yaml", True),
                                               ("cpu_proxy_lean", False)])
def test_step_says_when_it_leaves_out_the_schedules_look_ahead(capsys, monkeypatch, tmp_path, tiny_data, schedule,
                                                              noted):
    import x3dsearch.runner as runner

    def one_step(spec, base, resume=False, quiet=False):
        return {"base": base.to_dict(), "schedule": spec.proxy.recipe.name, "init": "inherit", "seed": 0,
                "base_epochs": 0, "candidates": [], "chosen": "spatial"}

    monkeypatch.setattr(runner, "run_step", one_step)
    root = Path(__file__).resolve().parents[1]
    path = str(root / schedule) if schedule.endswith(".yaml") else schedule
    assert main(["step", "--preset", "XS", "--data", str(tiny_data), "--proxy-schedule", path,
                 "-o", str(tmp_path / "step")]) == 0
    err = capsys.readouterr().err
    assert ("step takes the one step only" in err) == noted


def test_one_model_at_a_time(capsys):
    with pytest.raises(SystemExit):
        main(["flops", "--preset", "XS", "--config", "m.yaml"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--output", "runs/x"])
    assert "one of the arguments --preset --config is required" in capsys.readouterr().err


def test_version(capsys):
    from x3dsearch import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"x3dsearch {__version__}\n"


def test_search_lists_expansion_options_only_in_expand():
    commands = _subcommands(build_parser())
    expansion = {"--proxy-init", "--ceiling-gflops", "--evaluate-contractions", "--land-within"}
    assert expansion <= _visible_flags(commands["expand"][0])
    assert not expansion & _visible_flags(commands["search"][0])
    args = build_parser().parse_args(["search", "--strategy", "expand", "--target-gflops", "1", "--land-within", "1"])
    assert args.land_within == 1.0


@pytest.mark.parametrize("args, refused", [
    (["--strategy", "random", "--trials", "3", "--sampler", "nsga2"], "--strategy random does not use --sampler"),
    (["--strategy", "expand", "--trials", "5"], "--strategy expand does not use --trials"),
    (["--strategy", "expand", "--sampler", "tpe"], "does not use --sampler"),
    (["--trials", "3", "--proxy-init", "scratch", "--land-within", "1"],
     "--strategy optuna does not use --proxy-init, --land-within"),
    (["--strategy", "random", "--trials", "3", "--evaluate-contractions", "--ceiling-gflops", "4",
      "--final-init", "inherit"], "does not use --final-init, --ceiling-gflops, --evaluate-contractions"),
])
def test_search_refuses_options_its_strategy_ignores(capsys, args, refused):
    assert main(["search", "--target-gflops", "1", *args, "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert refused in err and "Traceback" not in err


def test_a_sampling_run_recorded_with_an_expansion_option_still_resumes(capsys, tmp_path):
    args = ["search", "--strategy", "random", "--trials", "3", "--target-gflops", "1", "--proxy-init", "scratch",
            "-o", str(tmp_path / "run"), "--dry-run"]
    assert main([*args, "--resume"]) != 0 and "does not use --proxy-init" in capsys.readouterr().err  # no run yet
    recorded = resolve(ExpandSettings(1.0, str(tmp_path / "run"), proxy_init="scratch", land_within=1.0),
                       dry_run=True).to_dict()
    RunDir(tmp_path / "run").create(recorded, resume=False)  # a run recorded before the check, with the option
    assert main([*args, "--resume"]) == 0  # run.yaml, not this check, decides whether it matches the run
    assert main(args) != 0 and "does not use --proxy-init" in capsys.readouterr().err


def test_schedule_options_offer_schedules_of_their_role():
    commands = _subcommands(build_parser())
    helps = {a.option_strings[0]: a.help for a in commands["expand"][0]._actions if a.option_strings}
    assert "cpu_proxy_x3" in helps["--proxy-schedule"] and "cpu_full" not in helps["--proxy-schedule"]
    assert "cpu_full" in helps["--full-schedule"] and "cpu_proxy" not in helps["--full-schedule"]


def test_report_json_either_spelling(capsys, tmp_path, monkeypatch):
    import x3dsearch.report as report

    monkeypatch.setattr(report, "run_report", lambda run, per_class=False: {"run": run})
    monkeypatch.setattr(report, "render", lambda data, fmt: f"{fmt}\n")
    assert main(["report", "r", "--json"]) == 0 and main(["report", "r", "--format", "json"]) == 0
    assert capsys.readouterr().out == "json\njson\n"
@pytest.mark.parametrize("command", [["expand", "--target-gflops", "6"],
                                     ["search", "--target-gflops", "6", "--trials", "3"]])
def test_dry_run_prints_the_box_and_the_window_the_videos_allow(capsys, tmp_path, tiny_data, command):
    code, out, _ = _dry_run(capsys, *command, "--data", str(tiny_data), "--out", str(tmp_path / "run"))
    # the tiny data's videos last 0.2 s: 6 source frames at the 30 fps reference
    assert code == 0 and "window limit: 0.2 s = 6 source frames at 30 fps (the shortest video, " in out
    assert "<= 6 source frames (frames x stride)" in out and "frames" in out and "320" in out
    code, out, _ = _dry_run(capsys, *command, "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                            "--max-window", "3")
    assert code == 0 and "window limit: 3 s = 90 source frames at 30 fps (--max-window)" in out


def test_dry_run_of_expand_names_axes_the_box_cuts_and_an_unreachable_target(capsys, tmp_path, tiny_data):
    code, out, _ = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(tiny_data),
                            "--out", str(tmp_path / "run"))
    assert code == 0 and "  fast        not offered: at its bound (window <= 6 frames)" in out
    code, out, err = _dry_run(capsys, "expand", "--target-gflops", "6", "--data", str(tiny_data),
                              "--out", str(tmp_path / "run"), "--max-window", "-1")
    assert _one_line_error(code, err, "--max-window must be a positive number of seconds")
    code, out, err = _dry_run(capsys, "expand", "--target-gflops", "200", "--data", str(tiny_data),
                              "--out", str(tmp_path / "run"))
    assert _one_line_error(code, err, "target 200 GFLOPs is out of reach", "tops out at") and out.count("\n") == 4


def test_every_subcommand_is_handled_in_commands():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in subcommands.items():
        assert sub.get_default("handler").__module__ == commands.__name__, name


def test_train_sizes_a_presets_classifier_to_the_data_and_refuses_a_config_that_does_not_fit(tmp_path, capsys,
                                                                                            monkeypatch):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / f"{split}.csv").parent.mkdir(exist_ok=True)
        (data / f"{split}.csv").write_text("".join(f"v{i}.mp4 {name}\n" for i, name in enumerate("abcab")))
    trained = []

    class Trained(Exception):
        pass

    def fit(config, *args, **kwargs):  # a stand-in for the training: record the model, end the command
        trained.append(config)
        raise Trained

    monkeypatch.setattr("x3dsearch.fit.fit", fit)
    with pytest.raises(Trained):
        main(["train", "--preset", "XS", "--data", str(data), "-o", str(tmp_path / "xs")])
    assert [c.num_classes for c in trained] == [3] and trained[0].replace(num_classes=400) == preset("XS")
    config = tmp_path / "m.yaml"
    preset("XS").to_yaml(config)
    assert main(["train", "--config", str(config), "--data", str(data), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the config has 400 classes" in err and "num_classes: 3" in err
    assert len(trained) == 1


def test_train_refuses_an_output_it_cannot_use_before_training(capsys, tmp_path, tiny_data):
    (tmp_path / "afile").write_text("not a folder")
    code = main(["train", "--preset", "XS", "--data", str(tiny_data), "-o", str(tmp_path / "afile")])
    assert _one_line_error(code, capsys.readouterr().err, "cannot use --output", "afile")


def test_train_names_a_damaged_checkpoint_instead_of_a_traceback(capsys, tmp_path, tiny_data):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code = main(["train", "--preset", "XS", "--data", str(tiny_data), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint.pt is damaged (UnpicklingError); delete it" in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--sample", "0"], ["--sample", "5", "--max-gflops", "nan"]])
def test_latency_sampling_checks_its_numbers_before_timing(capsys, args):
    code = main(["latency", *args])
    assert _one_line_error(code, capsys.readouterr().err, "--sample must be positive and --max-gflops a positive")


def test_resume_of_a_folder_without_a_run_says_it_starts_a_new_one(capsys, tmp_path, tiny_data, monkeypatch):
    import x3dsearch.runner

    def stop(*args, **kwargs):
        raise SystemExit(0)  # before anything trains

    monkeypatch.setattr(x3dsearch.runner, "run_expand", stop)
    with pytest.raises(SystemExit):
        main(["expand", "--target-gflops", "6", "--data", str(tiny_data), "-o", str(tmp_path / "typo"), "--resume"])
    assert f"nothing to resume in {tmp_path / 'typo'} (no run.yaml): starting a new run" in capsys.readouterr().err


def test_an_empty_config_path_is_a_mistake_not_the_default_model(capsys):
    assert _one_line_error(main(["flops", "--config", ""]), capsys.readouterr().err, "--config needs the path")


def test_train_says_where_a_coarse_start_trained(capsys, tmp_path, tiny_data):
    schedule = tmp_path / "coarse.yaml"
    schedule.write_text("epochs: 2\ncoarse_epochs: 1\nbatch_size: 4\nspatial_scale: 0.3\n")  # 112 px -> 34, pooled 17
    code = main(["train", "--preset", "X2D", "--data", str(tiny_data), "--schedule", str(schedule),
                 "-o", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "trained at 34px (the first epoch at 17px)" in out, out
