"""docs/cli.md is the parser's reference as generated now."""

from pathlib import Path

from x3dsearch.cli_docs import cli_markdown

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"


def test_docs_cli_md_is_current():
    assert DOCS.read_text() == cli_markdown(), "regenerate it: python -m x3dsearch.cli_docs > docs/cli.md"


def test_reference_lists_every_visible_option_and_no_hidden_one():
    text = cli_markdown()
    assert "## x3dsearch train" in text and "`--preset NAME`" in text and "`-o RUN_DIR`, `--output RUN_DIR`" in text
    assert "One of `--preset`, `--config` is required." in text
    assert "`--out " not in text and "`--from" not in text and "--cpus-per-trial" not in text
    assert "`--proxy-schedule NAME\\|FILE`" in text  # a pipe inside a table cell is escaped
