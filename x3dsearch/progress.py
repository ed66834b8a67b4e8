"""Progress of long loops: a tqdm bar on a terminal, a plain line now and then in a log file."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO, Union

from tqdm import tqdm

__all__ = ["progress", "LogProgress", "Progress"]

LOG_EVERY_S = 30.0


class LogProgress:
    """The part of tqdm's interface the package uses, printed as whole lines (no carriage returns).

    A line goes out at most every ``every_s`` seconds while the count moves, and once at ``close``.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 every_s: float = LOG_EVERY_S) -> None:
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.stream, self.every_s = stream, every_s
        self.postfix = ""
        self.started = self._printed_at = time.monotonic()
        self._printed_n = initial

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._printed_at >= self.every_s:
            self._line()

    def close(self) -> None:
        if self.n != self._printed_n:
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        elapsed = time.monotonic() - self.started
        parts = [p for p in (self.desc, f"{self.n}{of} {self.unit}", self.postfix, f"{elapsed:.0f}s") if p]
        print(" | ".join(parts), file=self.stream or sys.stderr, flush=True)
        self._printed_at, self._printed_n = time.monotonic(), self.n


Progress = Union[tqdm, LogProgress]


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, initial: int = 0,
             desc: str = "", unit: str = "it", enabled: bool = True) -> Progress:
    """A tqdm bar on stderr when it is a terminal, else plain periodic lines (nothing when not ``enabled``)."""
    if enabled and not sys.stderr.isatty():
        return LogProgress(iterable, total=total, initial=initial, desc=desc, unit=unit)
    return tqdm(iterable, total=total, initial=initial, desc=desc or None, unit=unit, file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
