"""The live view of a search: one log-friendly line per event, a summary table at the end."""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping, Sequence, TextIO

from .search import Candidate, SearchResult, Step, estimate_steps
from .config import X3DConfig
from .cost import count_flops

__all__ = ["LiveView", "format_duration"]


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


class LiveView:
    """Prints progress of a search; silent when ``quiet``."""

    def __init__(self, target_gflops: float, start: X3DConfig, concurrency: int, quiet: bool = False,
                 stream: TextIO | None = None) -> None:
        self.target = target_gflops
        self.quiet = quiet
        self.stream = stream  # None: the current sys.stderr (Tune pickles this view; a bound capture stream would not pickle)
        self.concurrency = max(1, concurrency)
        self.started = time.time()
        self.planned = estimate_steps(start, target_gflops)
        self.best: tuple[str, float, float] | None = None
        self._gflop_seconds: list[tuple[float, float]] = []
        self._batch: list[Candidate] = []
        self._finished = 0

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream or sys.stderr, flush=True)

    def batch_started(self, candidates: Sequence[Candidate], reused: int) -> None:
        self._batch, self._finished = list(candidates), 0
        if not candidates:
            return
        c = candidates[0]
        label = "contraction" if c.kind == "contract" else f"step {c.step}/~{max(self.planned, c.step)}"
        costs = ", ".join(f"{x.axis} {x.gflops:.3g}" for x in candidates)
        extra = f", {reused} from the journal" if reused else ""
        self._print(f"[{label}] training {len(candidates)} candidates{extra} (GFLOPs: {costs})")

    def trial_finished(self, candidate: Candidate, record: Mapping[str, Any]) -> None:
        status = record.get("status", "?")
        if status == "retried":
            self._print(f"    {candidate.axis:<11} worker lost, retrying: {record.get('reason', '')}")
            return
        self._finished += 1
        seconds = float(record.get("seconds") or 0.0)
        if status == "ok" and seconds > 0:
            self._gflop_seconds.append((candidate.gflops, seconds))
        top1 = record.get("top1")
        result = f"top1 {top1:6.1%}" if status == "ok" and top1 is not None else \
            f"{status}: {record.get('reason', '')}"[:80]
        if status == "ok" and top1 is not None and (self.best is None or top1 > self.best[1]):
            self.best = (f"{candidate.axis}@step{candidate.step}", top1, candidate.gflops)
        self._print(f"    {candidate.axis:<11} {candidate.gflops:8.4f} GFLOPs  {result}  "
                    f"{seconds:5.1f}s  ({self._finished}/{len(self._batch)})  "
                    f"elapsed {format_duration(time.time() - self.started)}  ETA {self._eta()}")

    def step_done(self, step: Step) -> None:
        outcome = step.outcomes[step.chosen.key]
        self._print(f"  -> step {step.index}: {step.chosen.axis} wins with top1 {outcome.top1:.1%} at "
                    f"{step.chosen.gflops:.4f} GFLOPs ({step.chosen.config.short})")

    def _eta(self) -> str:
        """Remaining proxy time: a fixed start-up plus seconds per GFLOP fitted on the latest trials.

        The first trials are tiny and dominated by start-up, so only the most recent ones (the
        costliest so far) set the per-GFLOP rate, and no estimate is shown ("?") until they take
        at least twice the start-up time; each later step is assumed to double the cost.
        """
        if not self._gflop_seconds or not self._batch:
            return "?"
        overhead = min(s for _, s in self._gflop_seconds)
        recent = self._gflop_seconds[-self.concurrency * 3:]
        if max(s for _, s in recent) < 2 * overhead:
            return "?"
        rate = sum(max(0.0, s - overhead) for _, s in recent) / max(sum(g for g, _ in recent), 1e-12)
        remaining = [c.gflops for c in self._batch[self._finished:]]
        cost = max(c.gflops for c in self._batch)  # about the next base's cost
        while cost < self.target:
            cost *= 2
            remaining += [cost] * len(self._batch)
        work = sum(g * rate + overhead for g in remaining)
        return "~" + format_duration(work / self.concurrency)

    def message(self, text: str) -> None:
        self._print(text)

    def summary(self, result: SearchResult, final: Mapping[str, Any] | None) -> str:
        """The path as a table (returned, and printed unless quiet)."""
        lines = [f"{'step':>4}  {'axis':<22}{'frames x stride':>16}{'crop':>6}{'γw':>7}{'γb':>7}{'γd':>7}"
                 f"{'GFLOPs':>10}{'proxy top1':>12}"]

        def row(label: str, axis: str, config: X3DConfig, top1: float | None) -> None:
            acc = f"{top1:.1%}" if top1 is not None else "-"
            lines.append(f"{label:>4}  {axis:<22}{f'{config.frames}x{config.stride}':>16}{config.crop:>6}"
                         f"{config.width:>7.3g}{config.bottleneck:>7.3g}{config.depth:>7.3g}"
                         f"{count_flops(config) / 1e9:>10.4f}{acc:>12}")

        row("0", "start", result.start, None)
        for step in result.steps:
            row(str(step.index), step.chosen.axis, step.chosen.config, step.outcomes[step.chosen.key].top1)
        if result.contraction is not None:
            c = result.contraction
            ev = c.evaluated.get(c.config.key)
            row("c", f"{c.axis}x{c.fraction:.2f}", c.config, ev.top1 if ev and ev.usable else None)
        text = "\n".join(lines)
        text += f"\nfinal: {result.final.short}, {result.final_gflops:.3f} GFLOPs (target {self.target:g})"
        if final is not None and final.get("status") == "ok":
            text += f", full-training top1 {final['top1']:.1%} top5 {final['top5']:.1%}"
        text += f"; wall time {format_duration(time.time() - self.started)}"
        self._print(text)
        return text
