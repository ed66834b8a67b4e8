"""The synthetic benchmark: layout, determinism, and the cues each class group is built on."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from x3dsearch.cli import main
from x3dsearch.config import X3DConfig
from x3dsearch.data import VideoDataset, default_dataset, make_synthetic, read_split
from x3dsearch.data import synthetic
from x3dsearch.errors import DataError

TINY = dict(videos_per_class=1, val_per_class=1, seconds=0.5, side=16, workers=1,
            classes=["texture-vertical", "flicker-3.5hz", "order-h-then-v"])


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_layout_loads_as_a_kinetics_folder(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path / "bench", seed=1, **{**TINY, "test_per_class": 2})
    assert (root / "classes.txt").read_text().split() == TINY["classes"]
    assert "frame rate" in (root / "README.md").read_text()
    train = VideoDataset(root, X3DConfig(frames=2, stride=4, crop=8), "train")
    val = VideoDataset(root, X3DConfig(frames=2, stride=4, crop=8), "val", views=(2, 1))
    test = VideoDataset(root, X3DConfig(frames=2, stride=4, crop=8), "test")
    assert (len(train), len(val), len(test), train.num_classes, train.skipped) == (3, 3, 6, 3, [])
    assert train.labels == [0, 1, 2] and val[0][0].shape == (2, 3, 2, 8, 8)
    assert train.groups == {"texture": ["texture-vertical"], "flicker": ["flicker-3.5hz"],
                            "order": ["order-h-then-v"]}
    assert not train.horizontal_flip  # a mirror image swaps the diagonal and anti-diagonal textures
    assert _decode(root / "videos" / "train" / "order-h-then-v_000.mp4").shape == (15, 16, 16, 3)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def test_same_seed_same_frames_other_seed_other_frames(tmp_path: Path) -> None:
    # The rendered frames are a function of (seed, split, class, index), whatever the worker count; the
    # libx264 encode is lossy and not bit-reproducible (docs/data.md, experiments/encode_determinism.py), so each
    # file is compared with the frames it was rendered from: here 5-7 grey levels off on average (yuv420 at
    # 16 px), against 35-54 from the other seed's frames.
    once = {**TINY, "test_per_class": 0}  # train and val: the test split renders through the same code
    first = make_synthetic(tmp_path / "a", seed=7, **once)
    second = make_synthetic(tmp_path / "b", seed=7, **{**once, "workers": 2})
    other = make_synthetic(tmp_path / "c", seed=8, **once)
    for video in sorted((first / "videos").rglob("*.mp4")):
        relative = video.relative_to(first)
        label, index = video.stem.rsplit("_", 1)
        seed7, seed8 = (synthetic._render(synthetic._Job(Path("unused.mp4"), seed, video.parent.name, label,
                                                         int(index), 16, 15, 30)) for seed in (7, 8))
        for decoded in (_decode(video), _decode(second / relative)):
            assert _mean_abs(decoded, seed7) < 10 < 25 < _mean_abs(decoded, seed8)
        assert _mean_abs(_decode(other / relative), seed8) < 10
    assert (first / "train.csv").read_text() == (second / "train.csv").read_text()


def test_test_split_has_its_own_seeds_and_the_size_of_val_by_default(tmp_path: Path) -> None:
    assert synthetic.split_counts(32) == {"train": 32, "val": 10, "test": 10}
    assert synthetic.split_counts(32, 30) == {"train": 32, "val": 30, "test": 30}  # the default benchmark
    assert synthetic.split_counts(32, 30, 5)["test"] == 5
    root = make_synthetic(tmp_path / "bench", seed=1, **TINY)
    assert len((root / "test.csv").read_text().splitlines()) == len((root / "val.csv").read_text().splitlines()) == 3
    jobs = [synthetic._Job(Path("unused.mp4"), 1, split, "flicker-3.5hz", 0, 16, 15, 30) for split in ("val", "test")]
    val, test = (synthetic._render(job) for job in jobs)
    assert _mean_abs(val, test) > 25  # another video, not a copy of val's
    assert not (make_synthetic(tmp_path / "none", **{**TINY, "test_per_class": 0}) / "test.csv").exists()


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DataError, match="not an empty folder"):
        make_synthetic(tmp_path / "full", **TINY)
    with pytest.raises(DataError, match="unknown synthetic class"):
        make_synthetic(tmp_path / "new", **{**TINY, "classes": ["dance"]})
    with pytest.raises(DataError, match="unknown size"):
        make_synthetic(tmp_path / "new", size="huge")


def _render(label: str, side: int = 64, seconds: float = 4.0) -> np.ndarray:
    job = synthetic._Job(Path("unused.mp4"), 0, "train", label, 0, side, int(seconds * 30), 30)
    return synthetic._render(job).astype(np.float32)


def _grating_energy(video: np.ndarray, crop: int) -> float:
    """Mean |vertical gradient| - |horizontal gradient| after resizing frames to ``crop`` like the loader."""
    x = torch.from_numpy(video[::10]).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(crop, crop), mode="bilinear", antialias=True).mean(1)
    return float((x.diff(dim=1).abs().mean() - x.diff(dim=2).abs().mean()) * crop)


def test_texture_is_resolved_at_56px_and_averaged_away_at_28px() -> None:
    horizontal, vertical = _render("texture-horizontal"), _render("texture-vertical")
    at56 = _grating_energy(horizontal, 56) - _grating_energy(vertical, 56)
    at28 = _grating_energy(horizontal, 28) - _grating_energy(vertical, 28)
    assert at56 > 4 * abs(at28) and at56 > 0


def _flicker_frequency(video: np.ndarray, stride: int) -> float:
    """Dominant frequency (Hz) of the brightest-varying pixel sampled every ``stride`` frames at 30 fps."""
    samples = video.mean(-1)[::stride]
    pixel = np.unravel_index(np.argmax(samples.std(0)), samples.shape[1:])
    signal = samples[(slice(None), *pixel)] - samples[(slice(None), *pixel)].mean()
    spectrum = np.abs(np.fft.rfft(signal, n=512))
    return float(np.fft.rfftfreq(512, d=stride / 30)[np.argmax(spectrum)])


def test_flicker_bands_are_resolved_at_stride_4_and_alias_at_stride_16() -> None:
    slow, fast = _render("flicker-0.3hz"), _render("flicker-3.5hz")
    assert _flicker_frequency(slow, 4) < 0.6 and 3.0 < _flicker_frequency(fast, 4) < 3.75
    assert _flicker_frequency(fast, 16) < 0.94      # above Nyquist of 1.875 Hz: looks slow


def test_order_events_are_two_bars_1_to_1_5_s_apart() -> None:
    video = _render("order-h-then-v")
    brightness = video.min(-1).mean((1, 2))      # white bars raise every channel
    on = np.flatnonzero(brightness > brightness.min() + 0.5 * (brightness.max() - brightness.min()))
    starts = on[np.r_[True, np.diff(on) > 1]] / 30
    assert len(starts) == 2 and 0.9 <= starts[1] - starts[0] <= 1.6


def test_default_dataset_is_generated_once_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X3DSEARCH_CACHE", str(tmp_path))
    calls = []
    real = synthetic.make_synthetic

    def tiny(out_dir: Path, seed: int = 0, val_per_class: int = 0) -> Path:
        calls.append((out_dir, val_per_class))
        return real(out_dir, seed=seed, **TINY)

    monkeypatch.setattr(synthetic, "make_synthetic", tiny)
    (tmp_path / "synthetic-small-seed0-val30").mkdir()  # generated before the test split: not reused
    (tmp_path / "synthetic-small-seed0-val30" / "README.md").write_text("old")
    first, again = default_dataset(), default_dataset()
    name = "synthetic-small-seed0-val30-test30"
    assert first == again == tmp_path / name and len(calls) == 1 and calls[0][1] == 30
    assert (first / "test.csv").is_file() and (first / "groups.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-small-seed0-val30", name]
    (first / "augment.json").unlink()  # a render from before the flip was switched off gets the declaration
    assert not read_split(default_dataset()).horizontal_flip and len(calls) == 1


def test_default_dataset_under_an_unwritable_cache_is_a_data_error(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("X3DSEARCH_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(DataError, match=r"cannot write the default benchmark under .*file/cache: .*X3DSEARCH_CACHE"):
        default_dataset()


def test_cli_make_data(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import x3dsearch.data

    real = synthetic.make_synthetic
    monkeypatch.setattr(x3dsearch.data, "make_synthetic",
                        lambda out, **given: real(out, **{**TINY, **given}))
    assert main(["make-data", str(tmp_path / "d"), "--seed", "3", "--videos-per-class", "2", "--val-per-class",
                 "3", "--test-per-class", "1"]) == 0
    assert [len((tmp_path / "d" / f"{split}.csv").read_text().splitlines()) for split in ("train", "val", "test")] \
        == [6, 9, 3]
    assert main(["make-data", str(tmp_path / "d")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("not a folder")
    assert main(["make-data", str(tmp_path / "afile" / "d")]) == 2
    assert "cannot write the benchmark to" in capsys.readouterr().err


def test_forbid_mirroring_declares_once_and_leaves_a_declared_choice_alone(tmp_path: Path) -> None:
    synthetic.forbid_mirroring(tmp_path)
    assert json.loads((tmp_path / "augment.json").read_text()) == {"horizontal_flip": False}
    (tmp_path / "augment.json").write_text('{"horizontal_flip": true}\n')  # a user's own folder says what it wants
    synthetic.forbid_mirroring(tmp_path)
    assert json.loads((tmp_path / "augment.json").read_text()) == {"horizontal_flip": True}
