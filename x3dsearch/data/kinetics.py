"""Kinetics-layout video datasets: split CSVs and X3D clip sampling (decoding in :mod:`x3dsearch.data.video`).

Layout: a folder with ``train.csv`` and ``val.csv`` (optionally ``test.csv``), one ``path label``
line per video, space- or comma-separated (the last field is the label, so with commas a path may
contain spaces). Relative paths resolve against the folder. Labels are integers or class names;
``classes.txt`` (one name per line) or ``classes.json`` (a list) fixes the class list and order.
Without one, integer labels give ``1 + max label`` classes and names give their sorted union over
every split CSV, so train and val always agree. An optional ``groups.json`` (``{"group": [class,
...]}``, each class in one group at most) declares class groups, for per-group results. An optional
``augment.json`` (``{"horizontal_flip": false}``) switches off the random horizontal flip of training
clips, for labels a mirror image changes (left/right motion, diagonal orientation).

Sampling follows the :class:`~x3dsearch.config.X3DConfig`:

* Time, not frame index: ``stride`` counts frames at a 30 fps reference, so frame ``i`` of a clip is
  taken at ``t_i = start + i * stride / 30`` seconds (the frame on screen at that time). Files at
  other frame rates, and the cache at its own ``cache_fps``, therefore give the same clip in seconds.
  The clip spans ``frames * stride / 30`` seconds; a video shorter than that loops (times wrap
  modulo its duration).
* Train: a random window, the short side scaled to ``crop * U[1.0, 1.25]``, a random
  ``crop`` x ``crop`` crop and a random horizontal flip (unless ``augment.json`` forbids it);
  returns ``(3, T, crop, crop)``.
* Eval (any other split): ``views = (K, S)``: K windows centred in K equal segments of the video,
  the short side resized to ``crop`` and S = 1 (centre) or 3 (left/top, centre, right/bottom along
  the long side) crops, the paper's K-Center / K-LeftCenterRight views; returns
  ``(K * S, 3, T, crop, crop)`` ordered window-major. From the clip cache, whose frames are square, S is 1.

Pixels are normalised with the Kinetics mean 0.45 and std 0.225 per channel. Randomness is drawn
from a NumPy generator seeded by ``(seed, epoch, index)``, so a sample does not depend on which
DataLoader worker reads it; call :meth:`VideoDataset.set_epoch` every epoch.

Bad files never stop an epoch: a missing, truncated or undecodable video is found when the dataset
is opened (probed, or decoded into the cache), warned about and listed in ``dataset.skipped``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..config import X3DConfig
from ..errors import DataError
from .cache import ClipCache, default_cache_dir
from .video import REFERENCE_FPS, FrameSource, VideoInfo, decode_frames, frame_indices, probe_video

__all__ = ["VideoDataset", "Split", "read_split", "shortest_video", "fingerprint", "SPLITS", "REFERENCE_FPS", "MEAN",
           "STD", "SCALE_JITTER", "CACHED_SECONDS"]

SPLITS = ("train", "val", "test")
CACHED_SECONDS = 10.0  # the clip cache keeps at most this much of each video
MEAN = 0.45
STD = 0.225
SCALE_JITTER = (1.0, 1.25)


@dataclass(frozen=True)
class Split:
    """One split CSV, parsed: absolute video paths, integer labels, the class list, declared groups and whether
    training may mirror its clips."""

    csv: Path
    videos: list[Path]
    labels: list[int]
    class_names: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    horizontal_flip: bool = True


def _split_fields(line: str) -> list[str]:
    if "," in line:
        return [part.strip() for part in line.rsplit(",", 1)]
    return line.rsplit(None, 1)


def _csv_rows(csv: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every non-blank, non-comment line; a ``path,label`` header is skipped."""
    rows = []
    for number, raw in enumerate(_text(csv).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split_fields(line)
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise DataError(f"{csv}:{number}: expected 'path label', got {raw.strip()!r}")
        if number == 1 and (fields[0].lower(), fields[1].lower()) == ("path", "label"):
            continue
        rows.append((number, fields[0], fields[1]))
    return rows


def _text(path: Path) -> str:
    """A dataset's text file (a byte-order mark, as spreadsheets save CSV, dropped); unreadable is a DataError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err.__class__.__name__})") from None


def _class_file(root: Path) -> list[str] | None:
    txt, js = root / "classes.txt", root / "classes.json"
    if txt.is_file():
        names = [line.strip() for line in _text(txt).splitlines() if line.strip()]
        source = txt
    elif js.is_file():
        names, source = _json_file(js), js
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"{js}: must be a JSON list of class names")
    else:
        return None
    if not names:
        raise DataError(f"{source}: lists no classes")
    if len(set(names)) != len(names):
        raise DataError(f"{source}: class names repeat")
    return names


def _group_file(root: Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """The groups ``groups.json`` declares ({} without the file); each must list known classes, none twice."""
    path = root / "groups.json"
    if not path.is_file():
        return {}
    groups = _json_file(path)
    if not isinstance(groups, dict) or not all(isinstance(n, list) and all(isinstance(c, str) for c in n)
                                               for n in groups.values()):
        raise DataError(f"{path}: must be a JSON object of group name -> list of class names")
    members = [c for names in groups.values() for c in names]
    unknown = sorted(set(members) - set(classes))
    if unknown:
        raise DataError(f"{path}: {', '.join(unknown)} not among the {len(classes)} classes")
    repeated = sorted({c for c in members if members.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: {', '.join(repeated)} in more than one group")
    return {str(name): list(names) for name, names in groups.items()}


def _flip_allowed(root: Path) -> bool:
    """Whether ``augment.json`` lets training mirror clips (True without the file)."""
    path = root / "augment.json"
    if not path.exists():
        return True
    declared = _json_file(path)
    unknown = sorted(set(declared) - {"horizontal_flip"}) if isinstance(declared, dict) else []
    if not isinstance(declared, dict) or unknown or not isinstance(declared.get("horizontal_flip", True), bool):
        raise DataError(f'{path}: must be a JSON object like {{"horizontal_flip": false}}'
                        + (f" (unknown key {', '.join(unknown)})" if unknown else ""))
    return declared.get("horizontal_flip", True)


def _json_file(path: Path) -> object:
    """A dataset's JSON side file, parsed; a file that cannot be read or parsed is one DataError naming it."""
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno})") from None


_MAX_INFERRED_CLASSES = 100_000  # integer labels past this are a typo (a video id?), not a class list to build


def _infer_classes(csvs: Sequence[Path]) -> list[str]:
    """Class list from the labels of every split CSV when no classes.txt/json exists."""
    labels = {label for csv in csvs for _, _, label in _csv_rows(csv)}
    if labels and all(re.fullmatch(r"\d+", label) for label in labels):
        top = max(int(label) for label in labels)
        if top >= _MAX_INFERRED_CLASSES:
            raise DataError(f"label {top} would make {top + 1:,} classes (integer labels count 0..max); number "
                            f"the classes from 0, or list them in classes.txt")
        return [str(i) for i in range(1 + top)]
    return sorted(labels)


def _locate(root_or_csv: str | os.PathLike, split: str) -> tuple[Path, Path]:
    path = Path(root_or_csv).expanduser()
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise DataError(f"dataset not found: {path}")
    if not (path / "train.csv").is_file():
        raise DataError(f"{path} is not a Kinetics-layout folder (no train.csv)")
    csv = path / f"{split}.csv"
    if not csv.is_file():
        raise DataError(f"{path} has no {split}.csv")
    return path, csv


def read_split(root_or_csv: str | os.PathLike, split: str = "train") -> Split:
    """Parse one split of a Kinetics-layout folder (or one CSV file); raise DataError naming the bad line."""
    root, csv = _locate(root_or_csv, split)
    classes = _class_file(root)
    if classes is None:
        siblings = [root / f"{name}.csv" for name in SPLITS if (root / f"{name}.csv").is_file()]
        classes = _infer_classes(siblings if csv in siblings else [*siblings, csv])
    index = {name: i for i, name in enumerate(classes)}
    videos, labels = [], []
    for number, path, label in _csv_rows(csv):
        if label in index:
            labels.append(index[label])
        elif re.fullmatch(r"\d+", label) and int(label) < len(classes):
            labels.append(int(label))
        else:
            raise DataError(f"{csv}:{number}: label {label!r} is not one of the {len(classes)} classes")
        videos.append(Path(path) if Path(path).is_absolute() else root / path)
    if not videos:
        raise DataError(f"{csv}: no videos listed")
    return Split(csv=csv, videos=videos, labels=labels, class_names=list(classes),
                 groups=_group_file(root, classes), horizontal_flip=_flip_allowed(root))


_SIDE_FILES = ("classes.txt", "classes.json", "groups.json", "augment.json")


def fingerprint(root: str | os.PathLike) -> str:
    """A short hash of a data folder's split CSVs, side files and listed videos' sizes, so that a resumed run can
    tell its data changed (a re-render, a replaced or removed video, new labels)."""
    root = Path(root).expanduser()
    digest = hashlib.sha256()
    for name in (*(f"{split}.csv" for split in SPLITS), *_SIDE_FILES):
        path = root / name
        digest.update(f"{name}:".encode() + (path.read_bytes() if path.is_file() else b"-") + b"\n")
    for split in SPLITS:  # the CSVs' bytes pin the paths; the sizes, in list order, follow the files
        csv = root / f"{split}.csv"
        for _, path, _ in _csv_rows(csv) if csv.is_file() else ():
            try:
                size = os.stat(root / path).st_size  # an absolute path stays itself
            except OSError:
                size = -1
            digest.update(f"{size}\n".encode())
    return digest.hexdigest()[:16]


def shortest_video(root: str | os.PathLike) -> tuple[float, Path] | None:
    """Seconds and path of the shortest video the folder's split CSVs list (probed with PyAV; unreadable
    files are skipped, as the loader skips them); None when none can be probed."""
    shortest: tuple[float, Path] | None = None
    for split in SPLITS:
        if (Path(root) / f"{split}.csv").is_file():
            for video in read_split(root, split).videos:
                try:
                    duration = probe_video(video).duration
                except DataError:
                    continue
                if shortest is None or duration < shortest[0]:
                    shortest = (duration, video)
    return shortest


# -- sampling ------------------------------------------------------------------------------


class _FileSource:
    """Decode each clip from its file with PyAV, seeking to the window."""

    def __init__(self, videos: list[Path], infos: list[VideoInfo]) -> None:
        self._videos, self._infos = videos, infos

    def info(self, item: int) -> VideoInfo:
        return self._infos[item]

    def frames(self, item: int, times: np.ndarray) -> np.ndarray:
        return decode_frames(self._videos[item], frame_indices(times, self._infos[item]), self._infos[item].fps)


def clip_span(config: X3DConfig) -> float:
    """Seconds covered by one clip: ``frames * stride`` reference frames at 30 fps."""
    return config.frames * config.stride / REFERENCE_FPS


def _clip_times(start: float, config: X3DConfig, duration: float) -> np.ndarray:
    return (start + np.arange(config.frames) * config.stride / REFERENCE_FPS) % duration


def _to_input(clip: torch.Tensor, top: int, left: int, side: int, crop: int, flip: bool) -> torch.Tensor:
    """Crop a ``side`` square from uint8 (T, H, W, 3), resize it to ``crop``, flip, normalise: (3, T, crop, crop)."""
    x = clip[:, top:top + side, left:left + side].permute(0, 3, 1, 2).float()
    if side != crop:
        x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
    if flip:
        x = x.flip(-1)
    x = x.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
    return x.permute(1, 0, 2, 3).contiguous()


def balanced_subset(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """``count`` indices taken round-robin over classes (each class in a seeded shuffled order), sorted."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation([i for i, label in enumerate(labels) if label == c]))
              for c in sorted(set(labels))]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)


def _check_views(views: Sequence[int]) -> tuple[int, int]:
    try:
        windows, crops = (int(v) for v in views)
    except (TypeError, ValueError):
        raise DataError(f"views must be (windows, crops), got {views!r}") from None
    if windows < 1 or crops not in (1, 3):
        raise DataError(f"views must be (K >= 1 windows, 1 or 3 crops), got {tuple(views)!r}")
    return windows, crops


class VideoDataset(torch.utils.data.Dataset):
    """X3D clips of one split of a Kinetics-layout folder, decoded from the files or from a cache.

    ``cache_dir``: None decodes every clip from its file; a folder (or True for the default,
    ``$X3DSEARCH_CACHE/clips`` or ``~/.cache/x3dsearch/clips``) decodes each video once into a
    uint8 cache at ``cache_side`` px (default: the smallest of 64, 128, 256, 512 at least the crop),
    ``cache_fps`` and at most ``max_seconds`` seconds, and samples from it. ``views`` = (windows,
    crops) applies to eval splits only (the cache's square frames make 3 crops one, so ``views`` keeps 1);
    ``max_videos`` keeps a class-balanced subset drawn with ``seed``.
    ``horizontal_flip``: whether training clips are mirrored at random (the folder's ``augment.json`` says).
    """

    def __init__(self, root_or_csv: str | os.PathLike, config: X3DConfig, split: str = "train",
                 cache_dir: str | os.PathLike | bool | None = None, views: Sequence[int] = (1, 1),
                 max_videos: int | None = None, seed: int = 0, *, cache_side: int | None = None,
                 cache_fps: float = REFERENCE_FPS, max_seconds: float = CACHED_SECONDS) -> None:
        parsed = read_split(root_or_csv, split)
        self.config, self.split, self.seed, self.epoch = config, split, seed, 0
        self.views = _check_views(views)
        self.class_names, self.groups = parsed.class_names, parsed.groups
        self.horizontal_flip = parsed.horizontal_flip
        self.csv = parsed.csv
        chosen = range(len(parsed.videos))
        if max_videos is not None:
            if max_videos < 1:
                raise DataError(f"max_videos must be positive, got {max_videos}")
            chosen = balanced_subset(parsed.labels, max_videos, seed)
        videos = [parsed.videos[i] for i in chosen]
        labels = [parsed.labels[i] for i in chosen]
        self.skipped: list[tuple[str, str]] = []
        if cache_dir not in (None, False):
            folder = default_cache_dir() if cache_dir is True else Path(cache_dir)
            side = cache_side or next((s for s in (64, 128, 256, 512) if s >= config.crop), config.crop)
            name = f"{self.csv.parent.name}-{self.csv.stem}"  # a folder's split, or a CSV file given by path
            self._source: FrameSource = ClipCache.open(folder, videos, side=side, fps=cache_fps,
                                                       max_seconds=max_seconds, name=name)
            rows = self._source.rows
            self.skipped += self._source.skipped
            self.views = (self.views[0], 1)  # the cache's frames are square: left, centre and right are one crop
        else:
            infos: dict[int, VideoInfo] = {}
            for i, path in enumerate(videos):
                try:
                    infos[i] = probe_video(path)
                except DataError as err:
                    self.skipped.append((str(path), str(err)))
            rows = sorted(infos)
            self._source = _FileSource([videos[i] for i in rows], [infos[i] for i in rows])
        for path, reason in self.skipped:
            warnings.warn(f"skipping video {path}: {reason}", stacklevel=2)
        self.videos = [videos[i] for i in rows]
        self.labels = [labels[i] for i in rows]
        if not self.videos:
            raise DataError(f"{self.csv}: none of its {len(videos)} videos can be decoded")

    @property
    def num_classes(self) -> int:
        """Size of the class list (from classes.txt/json or every split's labels), not just this subset's."""
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Draw new random windows, crops and flips: randomness is seeded by (seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.videos)):
            item = (index + offset) % len(self.videos)
            try:
                return self._sample(item), self.labels[item]
            except (av.FFmpegError, DataError, OSError) as err:
                # decoded fine when opened but not now (e.g. corrupt mid-file): report, use the next video
                record = (str(self.videos[item]), f"undecodable at sampling time ({err})")
                if record not in self.skipped:
                    self.skipped.append(record)
                warnings.warn(f"cannot decode {self.videos[item]} ({err}); using the next video", stacklevel=2)
        raise DataError(f"{self.csv}: no video of the split can be decoded any more")

    def _sample(self, item: int) -> torch.Tensor:
        info = self._source.info(item)
        crop, slack = self.config.crop, max(0.0, info.duration - clip_span(self.config))
        if self.split == "train":
            rng = np.random.default_rng([self.seed, self.epoch, item])
            times = _clip_times(rng.uniform(0.0, slack), self.config, info.duration)
            clip = torch.from_numpy(self._source.frames(item, times))
            height, width = clip.shape[1:3]
            scale = rng.uniform(*SCALE_JITTER)
            side = max(1, round(min(height, width) / scale))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            return _to_input(clip, top, left, side, crop, bool(rng.random() < 0.5) and self.horizontal_flip)
        windows, crops = self.views
        out = []
        for k in range(windows):
            times = _clip_times(slack * (k + 0.5) / windows, self.config, info.duration)
            clip = torch.from_numpy(self._source.frames(item, times))
            height, width = clip.shape[1:3]
            side = min(height, width)
            centre = ((height - side) // 2, (width - side) // 2)
            positions = [centre] if crops == 1 else [(0, 0), centre, (height - side, width - side)]
            out += [_to_input(clip, top, left, side, crop, False) for top, left in positions]
        return torch.stack(out)
