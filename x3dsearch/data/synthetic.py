"""A synthetic video benchmark on which the X3D axes matter: resolution, frame rate and clip length.

Every video (64x64 px, 30 fps, 4 s by default) shows one *host* object on a cluttered background.
Its shape names one of three class groups and is visible in any single frame, even at 28 px; inside
a group the four classes differ along exactly one axis, chosen to be out of reach of the X2D
starting point of the search and within reach of a larger model:

* ``texture-*`` (host: a square) - **spatial detail.** The square carries a fine sinusoidal grating,
  period 3 px, horizontal / vertical / diagonal / anti-diagonal, of equal mean colour. A 56 px crop
  (the proxy of a 224 px model, 0.875x of the frame) keeps about 60% of its contrast and 40 px about
  35%; a 28 px crop (X2D's proxy, 0.44x) puts it beyond Nyquist, where the antialiased resize leaves
  under 10% (measured orientation energy at 28 / 40 / 56 px: 35 / 251 / 549, see the tests).
* ``flicker-*`` (host: a disc) - **frame rate.** The disc's brightness oscillates sinusoidally, with a
  random phase, at 0.2-0.5, 1.0-1.5, 2.1-2.6 or 3.2-3.7 Hz. Sampling every 4 frames (7.5 Hz) resolves
  all four bands; every 9-16 frames (3.3-1.9 Hz) aliases them onto overlapping low frequencies, and
  a single frame shows only a random brightness.
* ``order-*`` (host: a ring) - **long windows.** Two events, each a bright bar flashed for 0.5 s: the
  first starts at 0.6-1.2 s, the second 1.0-1.5 s later; classes are horizontal-then-vertical,
  vertical-then-horizontal, horizontal twice and vertical twice. Telling them apart needs a clip
  that spans both events (up to 2 s: e.g. 16 frames x stride 4) with a stride short enough not to
  step over a 0.5 s flash; one frame sees at most one bar.

Distractors in every video: a random two-colour gradient background, three blurred blobs drifting
and slowly pulsing in random colours, a random host colour, size, position and drift, camera
jitter (a random walk of up to 2 px moving everything) and per-pixel noise. So a single frame
carries the group (chance is 1/12, the group alone gives 1/4 within it) but not the class, and a
short proxy training of X2D stays far from 100%.

Videos are H.264 (libx264, yuv420p, crf 18, one encoder thread) in MP4; the pixel content is a
function of (seed, split, class, index) only. The lossy libx264 encode is not: the same frames can
encode to slightly different bytes and decoded pixels from run to run
(``experiments/encode_determinism.py``), so two generations of one seed differ by compression noise.
``size="medium"`` renders 128x128 px with every length in pixels (sizes, grating period, motion,
jitter) doubled, so the same crops relative to the frame keep the same difficulty.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from ..errors import DataError
from ..progress import progress
from ..rundir import atomic_write
from .cache import cache_root

__all__ = ["CLASS_GROUPS", "CLASSES", "SIZES", "make_synthetic", "default_dataset", "short_groups"]

CLASS_GROUPS: dict[str, list[str]] = {
    "spatial detail (texture on a square)": [
        "texture-horizontal", "texture-vertical", "texture-diagonal", "texture-antidiagonal"],
    "frame rate (flicker of a disc)": [
        "flicker-0.3hz", "flicker-1.2hz", "flicker-2.3hz", "flicker-3.5hz"],
    "long windows (order of two flashes around a ring)": [
        "order-h-then-v", "order-v-then-h", "order-h-then-h", "order-v-then-v"],
}
CLASSES: list[str] = [name for names in CLASS_GROUPS.values() for name in names]
SIZES = {"small": 64, "medium": 128}
SECONDS = 4.0  # length of every video unless make_synthetic is told otherwise

_GRATING_ANGLES = {"horizontal": 90.0, "vertical": 0.0, "diagonal": 45.0, "antidiagonal": 135.0}
_FLICKER_BANDS = {"0.3hz": (0.2, 0.5), "1.2hz": (1.0, 1.5), "2.3hz": (2.1, 2.6), "3.5hz": (3.2, 3.7)}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class _Job:
    """One video to render: who it is (for the seed) and how to draw it."""

    path: Path
    seed: int
    split: str
    label: str
    index: int
    side: int
    frames: int
    fps: int


def _uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    return rng.uniform(low, high, size).astype(np.float32)


def _bounce(start: np.ndarray, velocity: np.ndarray, steps: np.ndarray, low: float, high: float,
            shake: np.ndarray) -> np.ndarray:
    """float32 positions (steps, 2) of a point at constant velocity reflected off [low, high], plus camera shake."""
    span = high - low
    folded = np.mod((start - low)[None] + velocity[None] * steps[:, None], 2 * span)
    return (low + np.where(folded > span, 2 * span - folded, folded)).astype(np.float32) + shake


def _host_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Antialiased coverage in [0, 1] of the host shape centred at (dy, dx) = 0."""
    if shape == "texture":
        distance = radius - np.maximum(np.abs(dy), np.abs(dx))
    elif shape == "flicker":
        distance = radius - np.hypot(dy, dx)
    else:
        distance = np.minimum(radius - np.hypot(dy, dx), np.hypot(dy, dx) - 0.55 * radius)
    return np.clip(distance + 0.5, 0.0, 1.0)


def _render(job: _Job) -> np.ndarray:
    """The video of one job as uint8 (frames, side, side, 3)."""
    rng = np.random.default_rng([job.seed, _SPLIT_IDS[job.split], CLASSES.index(job.label), job.index])
    group, variant = job.label.split("-", 1)
    side, scale, n = job.side, job.side / 64.0, job.frames
    t = (np.arange(n) / job.fps).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)

    jitter = (np.clip(np.cumsum(rng.normal(0.0, 0.6, (n, 2)), axis=0), -2.0, 2.0) * scale).astype(np.float32)

    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx - side / 2) + np.sin(angle) * (yy - side / 2)) / side + 0.5
    colours = rng.uniform(0.15, 0.65, (2, 3))
    background = (colours[0] + (colours[1] - colours[0]) * ramp[..., None]).astype(np.float32)
    video = np.broadcast_to(background, (n, side, side, 3)).copy()

    for _ in range(3):
        centre = _bounce(rng.uniform(0, side, 2), rng.uniform(-0.8, 0.8, 2) * scale, np.arange(n), 0, side,
                         jitter)
        sigma = rng.uniform(4, 8) * scale
        pulse = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
        weight = np.exp(-((yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2)
                        / (2 * sigma ** 2)) * pulse[:, None, None]
        video += weight[..., None] * (_uniform(rng, 0.0, 1.0, 3) - video) * np.float32(0.8)

    radius = rng.uniform(10, 13) * scale
    centre = _bounce(rng.uniform(0.35, 0.65, 2) * side, rng.uniform(-0.25, 0.25, 2) * scale, np.arange(n),
                     radius + 2 * scale, side - radius - 2 * scale, jitter)
    dy, dx = yy[None] - centre[:, 0, None, None], xx[None] - centre[:, 1, None, None]
    mask = _host_mask(group, dy, dx, radius)[..., None]
    colour = _uniform(rng, 0.2, 0.6, 3)
    if group == "texture":
        theta = np.deg2rad(_GRATING_ANGLES[variant])
        phase = np.cos(theta) * dx + np.sin(theta) * dy
        shade = 1.0 + 0.45 * np.cos(2 * np.pi * phase / (3.0 * scale) + rng.uniform(0, 2 * np.pi))[..., None]
    elif group == "flicker":
        frequency = rng.uniform(*_FLICKER_BANDS[variant])
        shade = (1.0 + 0.6 * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)))[:, None, None, None]
    else:
        shade = np.ones((n, 1, 1, 1), dtype=np.float32)
    video += mask * (np.clip(colour * shade, 0.0, 1.0) - video)

    if group == "order":
        first, second = variant.split("-then-")
        onset = rng.uniform(0.6, 1.2)
        for bar, start in ((first, onset), (second, onset + rng.uniform(1.0, 1.5))):
            envelope = np.clip(np.minimum(t - start, start + 0.5 - t) * job.fps / 2.0, 0.0, 1.0)
            across = yy if bar == "h" else xx
            offset = rng.uniform(0.25, 0.75) * side
            shape = np.clip(3.0 * scale - np.abs(across - offset) + 0.5, 0.0, 1.0)
            video += (envelope[:, None, None] * shape[None])[..., None] * (_uniform(rng, 0.85, 1.0, 3) - video)

    video += rng.standard_normal(video.shape, dtype=np.float32) * np.float32(5.0 / 255)
    return (np.clip(video, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


_X264_OPTIONS = {"crf": "18", "preset": "fast"}


def _encode(path: Path, video: np.ndarray, fps: int, options: dict[str, str] = _X264_OPTIONS) -> None:
    """Write uint8 (frames, H, W, 3) as H.264 MP4 with one encoder thread (lossy: bytes may vary run to run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.options = dict(options)
        stream.codec_context.thread_count = 1
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _make_video(job: _Job) -> None:
    _encode(job.path, _render(job), job.fps)


def _short(names: Sequence[str]) -> str:
    """A group's short name: its classes' common prefix (``texture``, ``flicker``, ``order``)."""
    return names[0].split("-", 1)[0]


def short_groups(classes: Sequence[str]) -> dict[str, list[str]]:
    """The class groups among ``classes`` under their short names, as ``groups.json`` declares them."""
    return {_short(names): [c for c in names if c in classes]
            for names in CLASS_GROUPS.values() if any(c in classes for c in names)}


def _readme(side: int, seconds: float, fps: int, seed: int, counts: dict[str, int], classes: Sequence[str]) -> str:
    groups = "\n".join(f"- **{group}** (`{_short(names)}`): {', '.join(f'`{c}`' for c in names if c in classes)}"
                       for group, names in CLASS_GROUPS.items() if any(c in classes for c in names))
    design = __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    counts_text = ", ".join(f"{n} {split}" for split, n in counts.items() if n)
    return (f"# x3dsearch synthetic video benchmark\n\n"
            f"Generated by `x3dsearch make-data` (seed {seed}): {side}x{side} px, {fps} fps, {seconds:g} s per "
            f"video, {len(classes)} classes, {counts_text} videos per class, each split with its own seeds.\n"
            f"Kinetics layout: {' / '.join(f'`{s}.csv`' for s, n in counts.items() if n)} (`path label`), "
            f"`classes.txt`, `groups.json` declaring the class groups (per-group results use it) and "
            f"`augment.json` switching off the random horizontal flip of training clips: a mirror image turns "
            f"a diagonal grating into an anti-diagonal one.\n\n"
            f"Class groups:\n\n{groups}\n\n## Design\n\n{design}\n")


def forbid_mirroring(root: str | os.PathLike) -> None:
    """Give a copy rendered before 2026-12-06 (no ``augment.json``, so training mirrored its clips) the file that
    forbids it; its pixels are unchanged. Nothing happens to a copy that has the file."""
    if not (Path(root) / "augment.json").is_file():
        _write_augment(Path(root))


def _write_augment(root: Path) -> None:
    """Forbid mirrored training clips: the flip maps texture-diagonal onto texture-antidiagonal. Written atomically,
    so a reader of a shared cache never sees it half written."""
    atomic_write(root / "augment.json", json.dumps({"horizontal_flip": False}) + "\n")


def split_counts(videos_per_class: int, val_per_class: int | None = None,
                 test_per_class: int | None = None) -> dict[str, int]:
    """Videos per class of each split: val defaults to ``videos_per_class * 10 // 32`` (at least 2), test to val."""
    val = max(2, videos_per_class * 10 // 32) if val_per_class is None else val_per_class
    return {"train": videos_per_class, "val": val, "test": val if test_per_class is None else test_per_class}


def make_synthetic(out_dir: str | os.PathLike, seed: int = 0, videos_per_class: int = 32, size: str = "small", *,
                   val_per_class: int | None = None, test_per_class: int | None = None, seconds: float = SECONDS,
                   fps: int = 30, side: int | None = None, classes: Sequence[str] | None = None,
                   workers: int = 2) -> Path:
    """Write the synthetic benchmark (H.264 videos, train/val/test CSVs, classes.txt, groups.json, augment.json,
    README).

    Split sizes per :func:`split_counts` (``test_per_class=0`` writes no test split); ``side``,
    ``seconds`` and ``classes`` override the size's frame side, the length and the class list (e.g. for tests).
    """
    if size not in SIZES:
        raise DataError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    side = side or SIZES[size]
    counts = split_counts(videos_per_class, val_per_class, test_per_class)
    frames = int(round(seconds * fps))
    if videos_per_class < 1 or counts["val"] < 1 or counts["test"] < 0 or frames < 1 or side < 8 or side % 2:
        raise DataError("videos per class (train, val; test >= 0) and seconds must be positive and the side an "
                        "even number >= 8")
    chosen = list(CLASSES if classes is None else classes)
    unknown = [c for c in chosen if c not in CLASSES]
    if unknown or not chosen:
        raise DataError(f"unknown synthetic class(es) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(CLASSES)}")
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder")
    try:
        (out / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write the benchmark to {out}: {err.strerror or err}") from None
    jobs = [_Job(out / "videos" / split / f"{label}_{i:03d}.mp4", seed, split, label, i, side, frames, fps)
            for split, count in counts.items() for label in chosen for i in range(count)]
    bar = progress(total=len(jobs), desc=f"rendering {out.name}", unit="video")
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_video, jobs, chunksize=4):
                bar.update()
    else:
        for job in jobs:
            _make_video(job)
            bar.update()
    bar.close()
    for split in (split for split, count in counts.items() if count):
        (out / f"{split}.csv").write_text("".join(f"{job.path.relative_to(out)} {job.label}\n"
                                                  for job in jobs if job.split == split))
    (out / "classes.txt").write_text("\n".join(chosen) + "\n")
    (out / "groups.json").write_text(json.dumps(short_groups(chosen), indent=2) + "\n")
    _write_augment(out)
    (out / "README.md").write_text(_readme(side, seconds, fps, seed, counts, chosen))
    return out


DEFAULT_VAL_PER_CLASS = 30  # 360 val clips: one clip is 0.28 points, the search compares proxies on them
# the name is the cache key: a benchmark generated without the test split (…-val30) is not reused
_DEFAULT_NAME = f"synthetic-small-seed0-val{DEFAULT_VAL_PER_CLASS}-test{DEFAULT_VAL_PER_CLASS}"


def default_dataset() -> Path:
    """The default benchmark (small, seed 0, 32 train / 30 val / 30 test videos per class), generated once.

    Its val split is larger than ``make_synthetic``'s default: proxy scores of a search are differences
    of a few points, and a 120-clip split's binomial error (3-4 points) would drown them. The test split
    (as large, its own seeds) is never selected on: it scores the final model.
    ``x3dsearch make-data DIR --val-per-class 30`` writes the same benchmark.
    """
    root = cache_root() / _DEFAULT_NAME
    if (root / "README.md").is_file():
        forbid_mirroring(root)
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{_DEFAULT_NAME}.", dir=root.parent))
    except OSError as err:
        raise DataError(f"cannot write the default benchmark under {root.parent}: {err.strerror}; point "
                        f"X3DSEARCH_CACHE at a writable folder, or pass --data DIR") from None
    try:
        make_synthetic(temp, seed=0, val_per_class=DEFAULT_VAL_PER_CLASS)
        os.rename(temp, root)
    except OSError:
        if not (root / "README.md").is_file():
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return root
