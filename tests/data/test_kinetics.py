"""Kinetics-layout folders: CSV parsing, clip sampling by time, views, bad files and bad lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from x3dsearch.config import X3DConfig
from x3dsearch.data import VideoDataset, fingerprint, read_split, shortest_video
from x3dsearch.data.kinetics import MEAN, STD
from x3dsearch.errors import DataError

from _videos import decoded_index, write_counter_video, write_ramp_video


def _indices(clip: torch.Tensor) -> list[float]:
    """Counter index shown by each frame of a normalised (3, T, H, W) clip."""
    raw = clip * (STD * 255) + MEAN * 255
    return [round(decoded_index(raw[:, t])) for t in range(raw.shape[1])]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinetics")
    write_counter_video(root / "videos" / "a30.mp4", frames=16, fps=30, width=48, height=32)
    write_counter_video(root / "videos" / "b15.mp4", frames=8, fps=15)
    write_counter_video(root / "videos" / "c30.mp4", frames=16, fps=30, width=32, height=40)
    write_counter_video(root / "videos" / "d30.mp4", frames=16, fps=30)
    (root / "classes.txt").write_text("jump\nrun\nswim\n")
    (root / "train.csv").write_text("videos/a30.mp4 jump\nvideos/b15.mp4,run\n"
                                    f"{root / 'videos' / 'c30.mp4'} swim\nvideos/d30.mp4 2\n")
    (root / "val.csv").write_text("path,label\nvideos/a30.mp4,0\nvideos/c30.mp4,swim\n")
    return root


def test_read_split_resolves_paths_names_and_integers(folder: Path) -> None:
    split = read_split(folder, "train")
    assert split.class_names == ["jump", "run", "swim"]
    assert split.labels == [0, 1, 2, 2]
    assert split.videos == [folder / "videos" / n for n in ("a30.mp4", "b15.mp4", "c30.mp4", "d30.mp4")]
    val = read_split(folder / "val.csv")
    assert val.labels == [0, 2] and val.videos[0] == folder / "videos" / "a30.mp4"


def test_classes_inferred_from_every_split_or_read_from_json(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("x.mp4 walk\ny.mp4 dance\n")
    (tmp_path / "val.csv").write_text("z.mp4 climb\n")
    assert read_split(tmp_path, "train").class_names == ["climb", "dance", "walk"]
    assert read_split(tmp_path, "val").labels == [0]
    (tmp_path / "train.csv").write_text("x.mp4 3\n")
    (tmp_path / "val.csv").write_text("z.mp4 5\n")
    assert len(read_split(tmp_path, "train").class_names) == 6
    (tmp_path / "val.csv").write_text("z.mp4 123456789012\n")  # a video id in the label column
    with pytest.raises(DataError, match="label 123456789012 would make 123,456,789,013 classes"):
        read_split(tmp_path, "train")
    (tmp_path / "val.csv").write_text("z.mp4 5\n")
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c", "d", "e", "f", "g"]))
    assert read_split(tmp_path, "val").class_names[-1] == "g"


def test_groups_are_read_from_groups_json_and_absent_without_it(folder: Path, tmp_path: Path) -> None:
    assert read_split(folder, "train").groups == {}
    (tmp_path / "classes.txt").write_text("jump\nrun\nswim\n")
    (tmp_path / "train.csv").write_text("x.mp4 jump\n")
    (tmp_path / "groups.json").write_text(json.dumps({"legs": ["jump", "run"], "water": ["swim"]}))
    assert read_split(tmp_path, "train").groups == {"legs": ["jump", "run"], "water": ["swim"]}


@pytest.mark.parametrize("groups, message", [
    ('{"legs": ["jump", "fly"]}', "fly not among the 3 classes"),
    ('{"legs": ["jump"], "air": ["jump"]}', "jump in more than one group"),
    ('["jump", "run"]', "must be a JSON object"),
    ('{"legs": [', "not valid JSON"),
])
def test_bad_groups_file_is_one_error(tmp_path: Path, groups: str, message: str) -> None:
    (tmp_path / "classes.txt").write_text("jump\nrun\nswim\n")
    (tmp_path / "train.csv").write_text("x.mp4 jump\n")
    (tmp_path / "groups.json").write_text(groups)
    with pytest.raises(DataError, match=f"groups.json: {message}"):
        read_split(tmp_path, "train")


def _mirrored(dataset: VideoDataset) -> list[bool]:
    """Per epoch: does the training clip of a dark-left, bright-right video come out brighter on the left?"""
    out = []
    for epoch in range(16):
        dataset.set_epoch(epoch)
        clip = dataset[0][0]
        half = clip.shape[-1] // 2
        out.append(bool(clip[..., :half].mean() > clip[..., half:].mean()))
    return out


def test_augment_json_switches_off_the_training_flip(tmp_path: Path) -> None:
    write_ramp_video(tmp_path / "ramp.mp4")
    (tmp_path / "train.csv").write_text("ramp.mp4 left\n")
    config = X3DConfig(frames=2, stride=1, crop=16)
    assert read_split(tmp_path).horizontal_flip
    assert 0 < sum(_mirrored(VideoDataset(tmp_path, config))) < 16
    (tmp_path / "augment.json").write_text(json.dumps({"horizontal_flip": False}))
    assert not read_split(tmp_path).horizontal_flip
    assert not any(_mirrored(VideoDataset(tmp_path, config)))


@pytest.mark.parametrize("text, message", [
    ('{"horizontal_flip": "no"}', "must be a JSON object like"),
    ('{"horizontal_flip": null}', "must be a JSON object like"),
    ('{"vertical_flip": false}', "unknown key vertical_flip"),
    ("[false]", "must be a JSON object like"),
    ("{", "not valid JSON"),
    (None, "cannot be read"),  # a folder of that name
])
def test_bad_augment_file_is_one_error(tmp_path: Path, text: str | None, message: str) -> None:
    (tmp_path / "train.csv").write_text("x.mp4 jump\n")
    if text is None:
        (tmp_path / "augment.json").mkdir()
    else:
        (tmp_path / "augment.json").write_text(text)
    with pytest.raises(DataError, match=f"augment.json: .*{message}"):
        read_split(tmp_path)


@pytest.mark.parametrize("lines, message", [
    ("ok.mp4 jump\njustonefield\n", "train.csv:2: expected 'path label'"),
    ("ok.mp4 jump\n\nbad.mp4 fly\n", "train.csv:3: label 'fly'"),
    ("ok.mp4 7\n", "train.csv:1: label '7'"),
    ("# only a comment\n", "train.csv: no videos"),
])
def test_bad_csv_raises_naming_file_and_line(tmp_path: Path, lines: str, message: str) -> None:
    (tmp_path / "classes.txt").write_text("jump\nrun\n")
    (tmp_path / "train.csv").write_text(lines)
    with pytest.raises(DataError, match=message.replace("'", ".")):
        VideoDataset(tmp_path, X3DConfig(), "train")


def test_not_a_kinetics_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a Kinetics-layout folder"):
        read_split(tmp_path)
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    with pytest.raises(DataError, match="no test.csv"):
        read_split(tmp_path, "test")
    with pytest.raises(DataError, match="not found"):
        read_split(tmp_path / "nowhere")


@pytest.mark.parametrize("frames, stride, crop", [(1, 16, 8), (4, 2, 16), (16, 1, 24), (3, 5, 12)])
def test_train_clip_shape_and_normalisation(folder: Path, frames: int, stride: int, crop: int) -> None:
    ds = VideoDataset(folder, X3DConfig(frames=frames, stride=stride, crop=crop), "train")
    clip, label = ds[0]
    assert clip.shape == (3, frames, crop, crop) and clip.dtype == torch.float32
    assert label == 0 and ds.num_classes == 3
    # uniform grey frames stay uniform after crop, resize, flip and normalisation
    raw = clip * (STD * 255) + MEAN * 255
    assert float(raw.std(dim=(0, 2, 3)).max()) < 2.0


@pytest.mark.parametrize("views", [(1, 1), (2, 1), (3, 3)])
def test_eval_views_shape(folder: Path, views: tuple[int, int]) -> None:
    ds = VideoDataset(folder, X3DConfig(frames=2, stride=3, crop=16), "val", views=views)
    clip, _ = ds[1]
    assert clip.shape == (views[0] * views[1], 3, 2, 16, 16)


def test_sampling_is_by_time_at_a_30fps_reference(folder: Path) -> None:
    config = X3DConfig(frames=4, stride=2, crop=16)
    ds = VideoDataset(folder, config, "train")
    a30, b15 = _indices(ds[0][0]), _indices(ds[1][0])
    assert np.diff(a30).tolist() == [2, 2, 2]       # 2 frames at 30 fps
    assert np.diff(b15).tolist() == [1, 1, 1]       # the same 1/15 s at 15 fps


def test_eval_windows_spread_over_the_video_and_short_videos_loop(folder: Path) -> None:
    ds = VideoDataset(folder, X3DConfig(frames=2, stride=3, crop=16), "val", views=(3, 1))
    starts = [_indices(view)[0] for view in ds[0][0]]
    assert starts == sorted(starts) and starts[0] < starts[-1]
    looping = VideoDataset(folder, X3DConfig(frames=6, stride=4, crop=16), "val")
    assert _indices(looping[0][0][0]) == [0, 4, 8, 12, 0, 4]   # 16-frame video, 24-frame window


def test_randomness_depends_on_seed_epoch_and_index_only(folder: Path) -> None:
    config = X3DConfig(frames=2, stride=1, crop=16)
    first, again = VideoDataset(folder, config, seed=3), VideoDataset(folder, config, seed=3)
    assert torch.equal(first[0][0], again[0][0])
    sequential = [first[i][0] for i in range(len(first))]
    loader = torch.utils.data.DataLoader(again, batch_size=None, num_workers=2)
    assert all(torch.equal(a, b) for (a, _), b in zip(loader, sequential))
    windows = set()
    for epoch in range(8):
        first.set_epoch(epoch)
        windows.add(tuple(_indices(first[0][0])))
    assert len(windows) > 1


def test_bad_files_are_skipped_and_reported(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    truncated = (folder / "videos" / "a30.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    (tmp_path / "train.csv").write_text(f"{folder / 'videos' / 'a30.mp4'} 0\ncorrupt.mp4 1\n"
                                        f"missing.mp4 0\ntruncated.mp4 1\n{folder / 'videos' / 'd30.mp4'} 1\n")
    for cache in (None, tmp_path / "cache"):
        with pytest.warns(UserWarning, match="skipping video") as caught:
            ds = VideoDataset(tmp_path, X3DConfig(frames=2, stride=2, crop=16), cache_dir=cache)
        assert len(ds) == 2 and ds.labels == [0, 1]
        assert sorted(Path(path).name for path, _ in ds.skipped) == ["corrupt.mp4", "missing.mp4", "truncated.mp4"]
        assert sum("missing.mp4" in str(w.message) for w in caught) == 1
        assert ds[1][0].shape == (3, 2, 16, 16)


def test_max_videos_takes_a_deterministic_class_balanced_subset(tmp_path: Path, folder: Path) -> None:
    lines = [f"{folder / 'videos' / 'd30.mp4'} {c}" for c in (0, 0, 0, 0, 1, 1, 2, 2, 2)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    subset = VideoDataset(tmp_path, X3DConfig(), max_videos=5, seed=1)
    assert sorted(np.bincount(subset.labels).tolist()) == [1, 2, 2]
    assert subset.labels == VideoDataset(tmp_path, X3DConfig(), max_videos=5, seed=1).labels
    assert len(VideoDataset(tmp_path, X3DConfig(), max_videos=100)) == 9


def test_shortest_video_is_probed_over_every_split_skipping_unreadable_files(folder: Path, tmp_path: Path) -> None:
    seconds, path = shortest_video(folder)  # every video lasts 16 frames at 30 fps or 8 at 15
    assert path.is_file() and seconds == pytest.approx(16 / 30, abs=1 / 30)
    write_counter_video(tmp_path / "short.mp4", frames=4)
    (tmp_path / "train.csv").write_text(f"missing.mp4 0\n{folder / 'videos' / 'd30.mp4'} 0\n")
    (tmp_path / "val.csv").write_text("missing.mp4 0\nshort.mp4 0\n")
    assert shortest_video(tmp_path) == (pytest.approx(4 / 30, abs=1 / 30), tmp_path / "short.mp4")
    (tmp_path / "val.csv").write_text("missing.mp4 0\n")
    assert shortest_video(tmp_path)[1].name == "d30.mp4"
    (tmp_path / "train.csv").write_text("missing.mp4 0\n")
    assert shortest_video(tmp_path) is None


def test_fingerprint_follows_the_lists_side_files_and_video_sizes_not_the_folder(tmp_path: Path) -> None:
    first = tmp_path / "first"
    for name in ("a", "b"):
        write_counter_video(first / "videos" / f"{name}.mp4", frames=4, fps=30)
    (first / "train.csv").write_text("videos/a.mp4 jump\nvideos/b.mp4 run\n")
    (first / "val.csv").write_text("videos/a.mp4 jump\n")
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    before = fingerprint(copy)
    assert before == fingerprint(first)  # the same content elsewhere
    (copy / "groups.json").write_text(json.dumps({"legs": ["run"]}))
    grouped = fingerprint(copy)
    video = copy / "videos" / "b.mp4"
    video.write_bytes(video.read_bytes() + b"\0")  # a re-encoded video
    resized = fingerprint(copy)
    video.unlink()  # a listed video gone
    gone = fingerprint(copy)
    (copy / "val.csv").write_text("videos/a.mp4 run\n")  # a relabelled video
    assert len({before, grouped, resized, gone, fingerprint(copy)}) == 5


def test_a_csv_saved_with_a_byte_order_mark_reads_its_header(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("\ufeffpath label\nx.mp4 jump\ny.mp4 run\n", encoding="utf-8")
    assert read_split(tmp_path, "train").class_names == ["jump", "run"]
    (tmp_path / "classes.txt").write_text("\ufeffrun\njump\n", encoding="utf-8")  # the class file too
    assert read_split(tmp_path, "train").class_names == ["run", "jump"]
