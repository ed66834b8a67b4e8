"""Progress output: a bar on a terminal, whole lines (no carriage returns) in a log."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from x3dsearch import progress as progress_module
from x3dsearch.progress import LogProgress, progress


def test_log_progress_prints_whole_lines_now_and_then() -> None:
    stream = io.StringIO()
    bar = LogProgress(total=10, desc="epoch 1/2", unit="step", stream=stream, every_s=0.0)
    bar.update(3)
    bar.set_description("epoch 2/2")
    bar.set_postfix(loss="1.234", refresh=False)
    bar.update(7)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("epoch 1/2 | 3/10 step | ")
    assert lines[1].startswith("epoch 2/2 | 10/10 step | loss=1.234 | ") and len(lines) == 2


def test_log_progress_waits_between_lines_and_closes_with_one() -> None:
    stream = io.StringIO()
    items = list(LogProgress(range(5), desc="decoding", unit="video", stream=stream, every_s=3600.0))
    assert items == [0, 1, 2, 3, 4] and stream.getvalue() == ""
    bar = LogProgress(range(5), desc="decoding", unit="video", stream=stream, every_s=3600.0)
    list(bar)
    bar.close()
    assert stream.getvalue().splitlines()[0].startswith("decoding | 5 video | ")


@pytest.mark.parametrize("tty, kind", [(True, tqdm), (False, LogProgress)])
def test_bar_on_a_terminal_lines_in_a_log(monkeypatch: pytest.MonkeyPatch, tty: bool, kind: type) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(stderr, "isatty", lambda: tty)
    monkeypatch.setattr(progress_module.sys, "stderr", stderr)
    bar = progress(total=3, unit="step")
    assert isinstance(bar, kind)
    bar.close()
    assert isinstance(progress(total=3, enabled=False), tqdm)
