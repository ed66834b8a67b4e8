"""The decoded-clip cache: each video of a split decoded once into one uint8 memory-mapped array.

A cache is ``<name>-<key>.npy``, shape (N, T, side, side, 3): every video resized so its short side
is ``side`` px, centre-cropped to a square (the long side's edges are dropped), resampled by time to
``fps`` and cut after ``max_seconds``; plus ``<name>-<key>.json``, the index (row, stored frames and
path of each video, and the files that could not be decoded). ``key`` hashes every source file's
path, size and mtime and the decoding parameters, so a changed file gives a new cache.

Builds are safe across processes: a ``.lock`` file (fcntl.flock) lets one process decode while the
others wait and then reuse its result, and the array and index are written to temporary files in
the same folder and renamed into place (the index last), so a reader never sees half a cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from ..errors import DataError
from ..progress import progress
from .video import VideoInfo, frame_indices, stream_origin

__all__ = ["ClipCache", "default_cache_dir", "cache_root"]

_VERSION = 1


def cache_root() -> Path:
    """Root of x3dsearch's caches: ``$X3DSEARCH_CACHE`` or ``~/.cache/x3dsearch``."""
    return Path(os.environ.get("X3DSEARCH_CACHE") or "~/.cache/x3dsearch").expanduser()


def default_cache_dir() -> Path:
    """Where decoded clips go when the user asks for a cache without naming a folder."""
    return cache_root() / "clips"


def _cache_key(videos: Sequence[Path], side: int, fps: float, max_seconds: float) -> str:
    files = []
    for path in videos:
        try:
            stat = path.stat()
            files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            files.append([str(path), None, None])
    text = json.dumps({"version": _VERSION, "files": files, "side": side, "fps": fps, "max_seconds": max_seconds})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _square(frame: av.VideoFrame, side: int, reformatter: VideoReformatter) -> np.ndarray:
    """RGB frame with its short side resized to ``side`` and centre-cropped to ``side`` x ``side``."""
    short = min(frame.width, frame.height)
    width, height = round(frame.width * side / short), round(frame.height * side / short)
    rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top:top + side, left:left + side]


def _decode_into(path: Path, out: np.ndarray, side: int, fps: float) -> int:
    """Decode a video into ``out`` (T, side, side, 3) at ``fps`` (frame on screen at j/fps); return frames stored."""
    if not path.is_file():
        raise DataError("missing file")
    stored, previous, last_time, step = 0, None, 0.0, 1.0 / fps
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = stream_origin(stream)
        rate = float(stream.average_rate) if stream.average_rate else fps
        for frame in container.decode(stream):
            last_time = (frame.time or 0.0) - origin
            while stored < len(out) and stored * step < last_time - 1e-6:
                out[stored] = previous if previous is not None else _square(frame, side, reformatter)
                stored += 1
            if stored == len(out):
                return stored
            previous = _square(frame, side, reformatter)
    if previous is None:
        raise DataError("no decodable frame")
    while stored < len(out) and stored * step < last_time + 1.0 / rate - 1e-6:
        out[stored] = previous
        stored += 1
    return max(stored, 1)


class ClipCache:
    """Clips of one split read from the decoded cache (a FrameSource for VideoDataset)."""

    def __init__(self, array_path: Path, index: dict[str, Any]) -> None:
        self.path = array_path
        self.fps = float(index["fps"])
        self._entries = index["videos"]
        self.rows: list[int] = [entry["item"] for entry in self._entries]
        self.skipped: list[tuple[str, str]] = [(path, reason) for path, reason in index["skipped"]]
        self._array: np.ndarray | None = None

    @classmethod
    def open(cls, folder: Path, videos: Sequence[Path], side: int, fps: float, max_seconds: float,
             name: str) -> "ClipCache":
        """Reuse the cache of these videos and parameters, building it (once, under a lock) if missing."""
        if side < 1 or fps <= 0 or max_seconds <= 0:
            raise DataError(f"cache parameters must be positive (side {side}, fps {fps}, seconds {max_seconds})")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"cannot create cache folder {folder} ({err.strerror})") from None
        stem = f"{name}-{_cache_key(videos, side, fps, max_seconds)}"
        cache = cls._load(folder, stem)
        if cache is not None:
            return cache
        with open(folder / f"{stem}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                cache = cls._load(folder, stem)
                if cache is None:
                    _build(folder, stem, videos, side, fps, max_seconds)
                    cache = cls._load(folder, stem)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        assert cache is not None, "a cache just built must load"
        return cache

    @classmethod
    def _load(cls, folder: Path, stem: str) -> "ClipCache | None":
        index_path, array_path = folder / f"{stem}.json", folder / f"{stem}.npy"
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if index.get("version") != _VERSION or not array_path.is_file():
            return None
        return cls(array_path, index)

    @property
    def array(self) -> np.ndarray:
        """The (N, T, side, side, 3) uint8 array, memory-mapped read-only on first use in each process."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def info(self, item: int) -> VideoInfo:
        """Length of stored video ``item`` at the cache's frame rate."""
        frames = self._entries[item]["frames"]
        return VideoInfo(duration=frames / self.fps, fps=self.fps, frames=frames)

    def frames(self, item: int, times: np.ndarray) -> np.ndarray:
        """uint8 (len(times), side, side, 3): the stored frames on screen at ``times`` (seconds)."""
        return self.array[item, frame_indices(times, self.info(item))]


def _build(folder: Path, stem: str, videos: Sequence[Path], side: int, fps: float, max_seconds: float) -> None:
    length = max(1, int(round(max_seconds * fps)))
    temp = folder / f".{stem}.{os.getpid()}.tmp.npy"
    array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=(len(videos), length, side, side, 3))
    entries: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    try:
        bar = progress(videos, desc=f"decoding {stem.rsplit('-', 1)[0]} into the clip cache", unit="video")
        for item, path in enumerate(bar):
            try:
                frames = _decode_into(path, array[len(entries)], side, fps)
            except (DataError, av.FFmpegError, OSError, UnicodeDecodeError) as err:
                reason = str(err) if isinstance(err, DataError) else f"undecodable ({err.__class__.__name__}: {err})"
                skipped.append((str(path), reason))
                continue
            entries.append({"item": item, "path": str(path), "frames": frames})
        array.flush()
        del array
        os.replace(temp, folder / f"{stem}.npy")
    finally:
        temp.unlink(missing_ok=True)
    index = {"version": _VERSION, "side": side, "fps": fps, "max_seconds": max_seconds, "videos": entries,
             "skipped": skipped}
    temp_index = folder / f".{stem}.{os.getpid()}.tmp.json"
    temp_index.write_text(json.dumps(index))
    os.replace(temp_index, folder / f"{stem}.json")
