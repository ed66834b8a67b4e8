"""The accuracy/cost plot, checked through the file it writes and the matplotlib artists it draws."""

import json

import pytest
from matplotlib.text import Annotation

from test_report import FINAL_SCORES, HALVING, make_run, read_journal, top_rung_scores
from x3dsearch.cli import main
from x3dsearch.config import preset
from x3dsearch.cost import count_flops
from x3dsearch.errors import UserError
from x3dsearch.plot import AXIS_COLORS, confusion_figure, plot_runs, run_scores, save_plot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    return make_run(root, "big", target=2.0), make_run(root, "small", target=0.3, final=False, data="/data/k400")


def _gids(fig, prefix):
    return [a for a in fig.axes[0].get_children() if (a.get_gid() or "").startswith(prefix)]


def test_one_run_draws_points_frontier_path_and_presets(runs):
    big = runs[0]
    fig = plot_runs([big])
    ax = fig.axes[0]
    journal = read_journal(big)
    ok_axes = {r["axis"] for r in journal if r["status"] == "ok"}
    point_sets = {a.get_gid().split(":")[2]: a for a in _gids(fig, "points:big:")}
    assert set(point_sets) == ok_axes
    for axis, artist in point_sets.items():
        assert tuple(artist.get_facecolor()[0][:3]) == pytest.approx(
            tuple(int(AXIS_COLORS[axis][i:i + 2], 16) / 255 for i in (1, 3, 5)))
    assert sum(len(a.get_offsets()) for a in point_sets.values()) == len({r["config_key"] for r in journal
                                                                          if r["status"] == "ok"})
    frontier_line, = _gids(fig, "frontier:big")
    assert len(frontier_line.get_xdata()) >= 3
    steps = json.loads((big / "path.json").read_text())["steps"]
    arrows = [a for a in _gids(fig, "path-arrow:big") if isinstance(a, Annotation)]
    labels = [a.get_text() for a in _gids(fig, "path-label:big")]
    assert len(arrows) == len(steps) - 1
    assert labels == [f"{s['step']} {s['axis']}" for s in steps]
    assert _gids(fig, "final-star:big") and _gids(fig, "final:big")
    (star,) = _gids(fig, "final-star:big")
    assert star.get_offsets()[0][1] == pytest.approx(FINAL_SCORES["test"].top1)  # the held-out split, not val
    presets = {a.get_gid() for a in _gids(fig, "preset:")}
    assert "preset:XS" in presets and "preset:XL" not in presets  # XL (36 GFLOPs) is far outside the range
    assert ax.get_xscale() == "log" and "GFLOPs" in ax.get_xlabel()
    assert "2 GFLOPs" in ax.get_title() and "synthetic" in ax.get_title()
    assert count_flops(preset("XS")) / 1e9 == pytest.approx(_gids(fig, "preset:XS")[0].get_xdata()[0])


def test_two_runs_overlaid_png_and_svg(runs, tmp_path):
    png = save_plot(runs, tmp_path / "two.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    svg = save_plot(runs, tmp_path / "two.svg", metric="params")
    assert b"<svg" in svg.read_bytes()[:500]
    fig = plot_runs(runs)
    assert _gids(fig, "frontier:big") and _gids(fig, "frontier:small")
    assert not _gids(fig, "final-star:small")  # no final training in that run
    legend_texts = {t.get_text() for legend in fig.axes[0].findobj(lambda a: hasattr(a, "get_texts"))
                    for t in legend.get_texts()}
    assert {t.split(":")[0] for t in legend_texts if ": final" in t} == {"big", "small"}
    assert "k400" in fig.axes[0].get_title()


def test_one_point_per_config_at_its_highest_rung(tmp_path):
    run = make_run(tmp_path, "halving", proxy=HALVING, init="inherit", final=False)
    journal = read_journal(run)
    scores = top_rung_scores(journal)
    assert len([r for r in journal if r["status"] == "ok"]) > len(scores)  # rungs and repeats: several records
    expected = sorted(scores.values())
    drawn = sorted(y for a in _gids(plot_runs([run]), "points:halving:") for _, y in a.get_offsets())
    assert drawn == pytest.approx(expected)


def test_params_metric_uses_millions(runs):
    fig = plot_runs([runs[1]], metric="params")
    assert "parameters" in fig.axes[0].get_xlabel()
    xs = [x for a in _gids(fig, "points:small:") for x, _ in a.get_offsets()]
    assert 0.5 < min(xs) and max(xs) < 100  # millions of parameters, not raw counts


def test_cli_plot_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "docs" / "frontier.png"
    assert main(["plot", str(runs[0]), "-o", str(out)]) == 0 and out.is_file()
    assert main(["plot", str(runs[0]), "-o", str(tmp_path / "f.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err
    (tmp_path / "afile").write_text("not a folder")
    assert main(["plot", str(runs[0]), "-o", str(tmp_path / "afile" / "f.png")]) == 2
    assert "cannot write the plot" in capsys.readouterr().err
    with pytest.raises(UserError, match="not a run directory"):
        plot_runs([tmp_path])


def test_confusion_figure_shows_each_true_class_as_a_share_of_its_videos():
    from test_report import FINAL_SCORES

    test = FINAL_SCORES["test"]  # slow-b: 5 videos, all predicted slow-a
    fig = confusion_figure(test, "a model")
    ax = fig.axes[0]
    shares = ax.images[0].get_array()
    assert shares.shape == (4, 4) and shares[3].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert shares[0].tolist() == pytest.approx([0.8, 0.2, 0.0, 0.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fast-a (80%)", "fast-b (80%)", "slow-a (60%)",
                                                            "slow-b (0%)"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["4", "1", "1", "4", "3", "2", "5"])  # zeros unlabelled
    assert len(ax.lines) == 2  # one horizontal and one vertical line between the two groups
    assert "test: top-1 55.0% over 20 videos (fast 80%, slow 30%)" in ax.get_title()


def test_cli_confusion_of_a_run_takes_test_where_it_exists_and_val_on_request(tmp_path, capsys):
    run = make_run(tmp_path)
    out = tmp_path / "confusion.png"
    assert main(["plot", str(run), "--confusion", "-o", str(out)]) == 0 and out.stat().st_size > 10_000
    assert run_scores(run)[0].split == "test" and run_scores(run, "val")[0].split == "val"
    assert main(["plot", str(run), "--split", "val"]) == 2
    assert "--split chooses the split of --confusion" in capsys.readouterr().err
    no_test = make_run(tmp_path, "no_test", splits=("val",))
    assert run_scores(no_test)[0].split == "val"
    for run_dir, extra, message in ((no_test, ["--split", "test"], "no test results in its metrics"),
                                    (make_run(tmp_path, "old", splits=()), [], "predate per-class results"),
                                    (make_run(tmp_path, "unfinished", final=False), [], "has no final metrics")):
        assert main(["plot", str(run_dir), "--confusion", *extra, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err


def test_confusion_of_a_train_out_folder(tmp_path):
    from test_report import FINAL_SCORES

    metrics = {"top1": 0.7, "config": preset("XS").to_dict(), "schedule": "cpu_full",
               **{split: scores.to_dict() for split, scores in FINAL_SCORES.items()}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    scores, title = run_scores(tmp_path)
    assert scores == FINAL_SCORES["test"] and title == f"{preset('XS').short}, cpu_full"
