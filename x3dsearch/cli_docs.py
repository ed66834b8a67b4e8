"""The command-line reference in Markdown, written from the parser: ``python -m x3dsearch.cli_docs > docs/cli.md``.

Built from the parser's actions rather than from ``--help`` text, so it reads the same on every Python.
"""

from __future__ import annotations

import argparse
import sys

from .cli import build_parser

__all__ = ["cli_markdown"]


def _escaped(text: str) -> str:
    """Text whose pipes and angle brackets do not end a Markdown table cell or open an HTML tag."""
    return text.replace("|", "\\|").replace("<", "\\<")


def _cell(text: str) -> str:
    """Prose made safe for one Markdown table cell, on one line."""
    return _escaped(" ".join(text.split()))


def _flags(action: argparse.Action) -> str:
    """``-o`` / ``--output DIR`` style: the option strings (or the positional's name) and the value's metavar."""
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else None
    value = "" if action.nargs == 0 else f" {action.metavar or choices or action.dest.upper()}"
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def _rows(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[str]:
    """A table of the actions a command's --help lists."""
    formatter = parser._get_formatter()
    rows = ["| option | what it does |", "|---|---|"]
    for action in actions:
        help = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            help += " (required)"
        rows.append(f"| {_escaped(_flags(action))} | {_cell(help)} |")
    return rows


def _command(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """The section of one subcommand: description, option tables by group, required choices, examples."""
    lines = [f"## x3dsearch {name}", "", parser.description or "", ""]
    for group in parser._action_groups:
        shown = [a for a in group._group_actions if a.help is not argparse.SUPPRESS
                 and not isinstance(a, argparse._HelpAction)]
        if shown:
            title = {"positional arguments": "arguments", "optional arguments": "options"}.get(group.title or "",
                                                                                               group.title)
            lines += [f"**{title}**", "", *_rows(parser, shown), ""]
    for group in parser._mutually_exclusive_groups:
        names = [a.option_strings[-1] for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if group.required:
            one = f"One of {', '.join(f'`{n}`' for n in names)} is" if len(names) > 1 else f"`{names[0]}` is"
            lines += [f"{one} required.", ""]
    if parser.epilog:
        lines += ["```", parser.epilog, "```", ""]
    return lines


def cli_markdown() -> str:
    """The whole reference: the command list, then one section per command."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help for choice in sub._choices_actions}
    lines = ["# Command-line reference", "",
             "Generated from the parser by `python -m x3dsearch.cli_docs > docs/cli.md` (`tests/test_cli_docs.py` "
             "checks that it is current). `x3dsearch COMMAND --help` prints the same in a terminal; "
             "`x3dsearch --version` prints the version.", "",
             parser.description or "", "", "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#x3dsearch-{name}) | {_cell(summaries[name] or '')} |" for name in sub.choices]
    lines.append("")
    for name, command in sub.choices.items():
        lines += _command(name, command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(cli_markdown())
