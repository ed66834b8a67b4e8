"""What a trained model gets right on one split: top-1/top-5, per class, per declared group, the confusion matrix.

Pure functions of a confusion matrix (rows: true class, columns: predicted class) and the class list;
:func:`x3dsearch.evaluate.score_views` fills one from a model and a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

__all__ = ["Scores", "scores_table", "render_scores", "split_scores", "headline", "headline_text"]


@dataclass(frozen=True)
class Scores:
    """One split's results; ``confusion[i][j]`` counts videos of class ``classes[i]`` predicted as ``classes[j]``."""

    split: str
    top1: float
    top5: float
    confusion: tuple[tuple[int, ...], ...]
    classes: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nll: float | None = None  # mean -log of the probability given to each video's class (None: not measured)

    @classmethod
    def from_counts(cls, split: str, confusion: Sequence[Sequence[int]], top5_hits: int, classes: Sequence[str],
                    groups: Mapping[str, Sequence[str]] | None = None, nll: float | None = None) -> "Scores":
        """Scores of a confusion matrix and the count of videos whose class was among the top five."""
        matrix = tuple(tuple(int(v) for v in row) for row in confusion)
        videos = sum(map(sum, matrix))
        hits = sum(matrix[i][i] for i in range(len(matrix)))
        return cls(split, hits / videos if videos else 0.0, top5_hits / videos if videos else 0.0, matrix,
                   tuple(classes), {name: tuple(members) for name, members in (groups or {}).items()}, nll)

    @property
    def videos(self) -> int:
        """Videos scored."""
        return sum(map(sum, self.confusion))

    def _rate(self, members: Sequence[str]) -> tuple[float, int] | None:
        """Top-1 over the videos of ``members`` and their count; None when none has a video."""
        rows = [self.classes.index(c) for c in members if c in self.classes]
        total = sum(sum(self.confusion[i]) for i in rows)
        return (sum(self.confusion[i][i] for i in rows) / total, total) if total else None

    def per_class(self) -> dict[str, float]:
        """Top-1 of each class that has videos in the split."""
        rates = {c: self._rate([c]) for c in self.classes}
        return {c: r[0] for c, r in rates.items() if r is not None}

    def per_group(self) -> dict[str, float]:
        """Top-1 over the videos of each declared group that has videos in the split."""
        rates = {g: self._rate(members) for g, members in self.groups.items()}
        return {g: r[0] for g, r in rates.items() if r is not None}

    def rows(self, per_class: bool = False) -> list[tuple[str, str, float, int]]:
        """(kind, name, top-1, videos): all, each group, and with ``per_class`` each class under its group."""
        entries: list[tuple[str, str, Sequence[str]]] = [("all", "all", self.classes)]
        grouped = [c for members in self.groups.values() for c in members]
        for group, members in self.groups.items():
            entries.append(("group", group, members))
            entries += [("class", c, (c,)) for c in members if per_class]
        entries += [("class", c, (c,)) for c in self.classes if per_class and c not in grouped]
        return [(kind, name, *rate) for kind, name, members in entries
                if (rate := self._rate(members)) is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the per-class and per-group top-1 written out."""
        return {"split": self.split, "top1": self.top1, "top5": self.top5, "nll": self.nll, "videos": self.videos,
                "per_group": self.per_group(), "per_class": self.per_class(), "classes": list(self.classes),
                "groups": {g: list(m) for g, m in self.groups.items()},
                "confusion": [list(row) for row in self.confusion]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scores":
        """Inverse of :meth:`to_dict` (the per-class and per-group numbers are recomputed)."""
        return cls(data["split"], data["top1"], data["top5"], tuple(tuple(row) for row in data["confusion"]),
                   tuple(data["classes"]), {g: tuple(m) for g, m in data.get("groups", {}).items()}, data.get("nll"))


def scores_table(scores: Sequence[Scores], per_class: bool = False) -> pd.DataFrame:
    """One row per all/group/class, one top-1 and one video-count column per split (splits side by side)."""
    columns: dict[str, dict[tuple[str, str], Any]] = {}
    order: list[tuple[str, str]] = []
    for s in scores:
        for kind, name, top1, videos in s.rows(per_class):
            if (kind, name) not in order:
                order.append((kind, name))
            columns.setdefault(f"{s.split} top1", {})[(kind, name)] = top1
            columns.setdefault(f"{s.split} videos", {})[(kind, name)] = videos
    frame = pd.DataFrame({"kind": [k for k, _ in order], "name": [n for _, n in order]})
    for column, values in columns.items():
        frame[column] = [values.get(key) for key in order]
    return frame


def render_scores(scores: Sequence[Scores], per_class: bool = False) -> str:
    """:func:`scores_table` as aligned text: top-1 in percent, groups and classes indented under ``all``."""
    table = scores_table(scores, per_class)
    grouped = {c for s in scores for members in s.groups.values() for c in members}
    columns = [c for c in table.columns if c not in ("kind", "name")]
    depth = [0 if kind == "all" else 2 if kind == "class" and name in grouped else 1
             for kind, name in zip(table["kind"], table["name"])]
    cells = [["  " * d + name for d, name in zip(depth, table["name"])]]
    cells += [["-" if pd.isna(v) else f"{v:.1%}" if c.endswith("top1") else f"{int(v)}" for v in table[c]]
              for c in columns]
    headers = ["", *columns]
    widths = [max(len(h), *map(len, column)) for h, column in zip(headers, cells)]
    lines = [[h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))]]
    lines += [[column[r].ljust(w) if i == 0 else column[r].rjust(w) for i, (column, w) in enumerate(zip(cells, widths))]
              for r in range(len(table))]
    return "\n".join("  ".join(line).rstrip() for line in lines)


def headline(metrics: Mapping[str, Any]) -> tuple[float | None, str]:
    """A training's number to quote and its split: test where the metrics have it, else val (the top1 field)."""
    test = metrics.get("test")
    if test:
        return test["top1"], "test"
    return metrics.get("top1"), "val"


def headline_text(metrics: Mapping[str, Any]) -> str:
    """:func:`headline` in words: on the held-out test split, or on val, the split the search selected on."""
    top1, split = headline(metrics)
    if split == "test":
        return (f"top-1 {top1:.1%} on the held-out test split ({metrics['test']['videos']} videos); "
                f"{metrics['top1']:.1%} on val, the split the search selected on")
    why = "the data has no test.csv" if metrics.get("val") else "its metrics predate test splits"
    return f"top-1 {top1:.1%} on val, the split the search selected on ({why}): not a held-out number"


def split_scores(metrics: Mapping[str, Any]) -> list[Scores]:
    """A training's scores, val then test where each exists ([] for metrics written before them)."""
    return [Scores.from_dict(metrics[split]) for split in ("val", "test") if metrics.get(split)]
