"""Per-class and per-group results of a confusion matrix, worked out by hand."""

import json

import pytest

from x3dsearch.scores import Scores, headline, render_scores, scores_table

CLASSES = ("a1", "a2", "b1", "lone")
GROUPS = {"a": ("a1", "a2"), "b": ("b1",)}
# rows: true class, columns: predicted; a1 4 of 5 right, a2 1 of 3, b1 2 of 2, lone has no videos
CONFUSION = ((4, 1, 0, 0), (2, 1, 0, 0), (0, 0, 2, 0), (0, 0, 0, 0))


@pytest.fixture
def scores() -> Scores:
    return Scores.from_counts("val", CONFUSION, top5_hits=9, classes=CLASSES, groups=GROUPS)


def test_top1_per_class_and_per_group(scores: Scores) -> None:
    assert scores.videos == 10
    assert scores.top1 == pytest.approx(7 / 10) and scores.top5 == pytest.approx(9 / 10)
    assert scores.per_class() == pytest.approx({"a1": 4 / 5, "a2": 1 / 3, "b1": 1.0})  # no videos: no entry
    assert scores.per_group() == pytest.approx({"a": 5 / 8, "b": 1.0})  # pooled over the group's videos


def test_without_groups_there_are_no_group_results() -> None:
    plain = Scores.from_counts("test", CONFUSION, 9, CLASSES)
    assert plain.per_group() == {} and [r[0] for r in plain.rows()] == ["all"]
    assert plain.per_class()["a2"] == pytest.approx(1 / 3)


def test_round_trip_through_json(scores: Scores) -> None:
    data = json.loads(json.dumps(scores.to_dict()))
    assert data["per_group"] == pytest.approx({"a": 5 / 8, "b": 1.0}) and data["videos"] == 10
    assert Scores.from_dict(data) == scores


def test_table_puts_splits_side_by_side_and_lists_classes_on_request(scores: Scores) -> None:
    test = Scores.from_counts("test", ((1, 1, 0, 0), (0, 2, 0, 0), (0, 0, 0, 1), (0, 0, 0, 3)), 7, CLASSES, GROUPS)
    table = scores_table([scores, test])
    assert list(table["name"]) == ["all", "a", "b"]
    assert list(table.columns) == ["kind", "name", "val top1", "val videos", "test top1", "test videos"]
    assert table["test top1"].tolist() == pytest.approx([6 / 8, 3 / 4, 0.0])
    assert table["val videos"].tolist() == [10, 8, 2]
    detailed = scores_table([scores, test], per_class=True)
    assert list(detailed["name"]) == ["all", "a", "a1", "a2", "b", "b1", "lone"]  # each class under its group
    assert detailed["val top1"].isna().tolist() == [False] * 6 + [True]  # lone: no val videos
    text = render_scores([scores, test], per_class=True).splitlines()
    assert text[0].split() == ["val", "top1", "val", "videos", "test", "top1", "test", "videos"]
    assert text[4].split() == ["a2", "33.3%", "3", "100.0%", "2"] and text[4].startswith("    a2")
    assert text[-1].split() == ["lone", "-", "-", "100.0%", "3"] and text[-1].startswith("  lone")


def test_headline_prefers_test() -> None:
    assert headline({"top1": 0.5, "test": {"top1": 0.4}}) == (0.4, "test")
    assert headline({"top1": 0.5, "test": None}) == (0.5, "val")
    assert headline({}) == (None, "val")
