"""The decoded-clip cache: same clips as the files, reused, rebuilt on change, safe to build concurrently."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from x3dsearch.config import X3DConfig
from x3dsearch.data import ClipCache, VideoDataset
from x3dsearch.data.kinetics import MEAN, STD

from _videos import decoded_index, write_counter_video

CONFIG = X3DConfig(frames=4, stride=2, crop=16)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, fps in (("a", 30), ("b", 15), ("c", 30)):
        write_counter_video(tmp_path / f"{name}.mp4", frames=16 if fps == 30 else 8, fps=fps, width=40, height=32)
    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 1\nc.mp4 1\n")
    return tmp_path


def _arrays(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npy"))


def _indices(clip: torch.Tensor) -> list[int]:
    raw = clip * (STD * 255) + MEAN * 255
    return [round(decoded_index(raw[:, t])) for t in range(raw.shape[1])]


def test_cached_clips_match_decoded_clips(folder: Path) -> None:
    direct = VideoDataset(folder, CONFIG, seed=5)
    cached = VideoDataset(folder, CONFIG, seed=5, cache_dir=folder / "cache", cache_side=32)
    assert [_indices(direct[i][0]) for i in range(3)] == [_indices(cached[i][0]) for i in range(3)]
    array = np.load(_arrays(folder / "cache")[0], mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == (3, 300, 32, 32, 3)


def test_cache_is_reused_then_rebuilt_when_a_source_changes(folder: Path) -> None:
    cache = folder / "cache"
    first = VideoDataset(folder, CONFIG, cache_dir=cache)
    [array] = _arrays(cache)
    built = array.stat().st_mtime_ns
    again = VideoDataset(folder, CONFIG, cache_dir=cache)
    assert _arrays(cache) == [array] and array.stat().st_mtime_ns == built
    assert torch.equal(first[0][0], again[0][0])
    write_counter_video(folder / "a.mp4", frames=4, fps=30, width=40, height=32)
    changed = VideoDataset(folder, CONFIG, cache_dir=cache)
    assert len(_arrays(cache)) == 2
    assert changed._source.info(0).frames == 4 and max(_indices(changed[0][0])) <= 3


def test_cache_files_are_named_after_the_list_they_hold(folder: Path) -> None:
    cache = folder / "cache"
    VideoDataset(folder, CONFIG, "train", cache_dir=cache)
    (folder / "picked.csv").write_text("a.mp4 0\n")
    VideoDataset(folder / "picked.csv", CONFIG, "val", cache_dir=cache)  # a CSV given by path, read as val
    assert [p.name.rsplit("-", 1)[0] for p in _arrays(cache)] == [f"{folder.name}-picked", f"{folder.name}-train"]


def test_incomplete_cache_files_are_never_read(folder: Path) -> None:
    cache = folder / "cache"
    VideoDataset(folder, CONFIG, cache_dir=cache)
    [array] = _arrays(cache)
    array.with_suffix(".json").write_text('{"version": 1, "videos": [')   # as if killed mid-write
    rebuilt = VideoDataset(folder, CONFIG, cache_dir=cache)
    assert rebuilt[2][0].shape == (3, 4, 16, 16)
    assert not list(cache.glob(".*tmp*"))


def test_default_cache_folder_follows_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X3DSEARCH_CACHE", str(folder / "home"))
    VideoDataset(folder, CONFIG, cache_dir=True)
    assert len(_arrays(folder / "home" / "clips")) == 1


def _open_cache(folder: Path, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    videos = [folder / f"{name}.mp4" for name in "abc"]
    barrier.wait()
    cache = ClipCache.open(folder / "cache", videos, side=24, fps=30.0, max_seconds=2.0, name="race")
    out.put((str(cache.path), cache.rows, int(cache.array[2, 5].mean())))


def test_two_processes_building_at_once_leave_one_valid_cache(folder: Path) -> None:
    context = mp.get_context("fork")
    barrier, out = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_open_cache, args=(folder, barrier, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert results[0] == results[1]
    path, rows, value = results[0]
    assert rows == [0, 1, 2] and round(decoded_index(np.full(1, value))) == 5
    assert _arrays(folder / "cache") == [Path(path)]
    assert not list((folder / "cache").glob(".*tmp*"))


def test_cached_frames_are_square_so_three_crops_are_scored_as_one(folder: Path) -> None:
    (folder / "val.csv").write_text("a.mp4 0\nc.mp4 1\n")
    files = VideoDataset(folder, CONFIG, "val", views=(2, 3))  # 40x32 frames: three crops along the width
    assert files.views == (2, 3) and files[0][0].shape == (6, 3, 4, 16, 16)
    cached = VideoDataset(folder, CONFIG, "val", views=(2, 3), cache_dir=folder / "cache")
    height, width = cached._source.frames(0, np.zeros(1)).shape[1:3]
    assert cached.views == (2, 1) and height == width == 64  # the cache side
    centre = VideoDataset(folder, CONFIG, "val", views=(2, 1), cache_dir=folder / "cache")
    assert torch.equal(cached[1][0], centre[1][0]) and cached[1][0].shape == (2, 3, 4, 16, 16)
