"""The command line: parser layout, one-line user errors, dry runs."""

import argparse
import ast
import json
from pathlib import Path

from x3dsearch import cli
from x3dsearch.cli import build_parser, main


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
    assert {"flops", "presets", "expand", "search", "compare", "train", "report", "plot", "export",
            "make-data"} <= set(commands)
    for name, (sub, summary) in commands.items():
        assert summary and sub.description, f"{name} has no help text"
        strings = [s for action in sub._actions for s in action.option_strings]
        assert len(strings) == len(set(strings)), f"{name} repeats {sorted({s for s in strings if strings.count(s) > 1})}"
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
    assert (search["strategy"], search["trials"], search["sampler"]) == ("optuna", None, "tpe")
    assert expand == dict(expand, target_gflops=1.0, out=None, resume=False, data=None, space="x3d_kinetics",
                          proxy_schedule="cpu_proxy", full_schedule="cpu_full", final_training=True, seed=0,
                          ceiling_gflops=None, evaluate_contractions=False, address=None, storage=None,
                          cpus_per_trial=1.0, gpus_per_trial=0.0, max_concurrent=None, max_failures=2,
                          dry_run=False, quiet=False, json=False)
