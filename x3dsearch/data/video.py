"""Video files: probing, frame indexing and PyAV decoding shared by the dataset and the clip cache.

A video is described by :class:`VideoInfo` (duration, frame rate, frame count); the frame for a time
``t`` is the one on screen at ``t`` (:func:`frame_indices`). Clips come from a :class:`FrameSource`:
the files themselves (:mod:`x3dsearch.data.kinetics`) or the decoded cache (:mod:`x3dsearch.data.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from ..errors import DataError

__all__ = ["VideoInfo", "FrameSource", "REFERENCE_FPS", "probe_video", "decode_frames", "frame_indices",
           "stream_origin"]

# X3D strides count frames at this rate; also assumed for a stream that states none
REFERENCE_FPS = 30.0


@dataclass(frozen=True)
class VideoInfo:
    """What sampling needs to know about one video: its length in seconds and frame rate."""

    duration: float
    fps: float
    frames: int


def stream_origin(stream: av.video.stream.VideoStream) -> float:
    """Seconds at which a stream's first frame is shown (its start time; 0 when unset)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else REFERENCE_FPS


def _frame_index(frame: av.VideoFrame, origin: float, fps: float) -> int:
    return int(round(((frame.time or 0.0) - origin) * fps))


def probe_video(path: Path) -> VideoInfo:
    """Open a video, decode its first frame and read its length; raise DataError if that fails."""
    if not path.is_file():
        raise DataError("missing file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError("no video stream")
            stream = container.streams.video[0]
            fps = _stream_fps(stream)
            first = next(container.decode(stream), None)
            if first is None:
                raise DataError("no decodable frame")
            frames = stream.frames
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            else:
                duration = frames / fps
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise DataError(f"undecodable ({err.__class__.__name__}: {err})") from None
    frames = frames or max(1, int(round(duration * fps)))
    return VideoInfo(duration=max(duration, 1.0 / fps), fps=fps, frames=frames)


def decode_frames(path: Path, indices: Sequence[int], fps: float) -> np.ndarray:
    """Frames ``indices`` (at ``fps``) of a video as uint8 (len, H, W, 3), seeking to the first one.

    The frame for an index is the last one shown at or before its time; an index past the end of
    the stream gets the last frame.
    """
    wanted = sorted(set(int(i) for i in indices))
    found: dict[int, np.ndarray] = {}
    # one reformatter per video keeps its swscale context: 20x faster than frame.to_ndarray(format=...)
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream_origin(stream)
        if wanted[0] > 0:
            container.seek(int((origin + wanted[0] / fps) / stream.time_base), stream=stream, backward=True)
        previous: av.VideoFrame | None = None
        previous_rgb: np.ndarray | None = None
        k = 0
        for frame in container.decode(stream):
            index = _frame_index(frame, origin, fps)
            while k < len(wanted) and wanted[k] < index:
                if previous is None:
                    previous = frame
                if previous_rgb is None:
                    previous_rgb = reformatter.reformat(previous, format="rgb24").to_ndarray()
                found[wanted[k]] = previous_rgb
                k += 1
            if k == len(wanted):
                break
            previous, previous_rgb = frame, None
        if previous is None:
            raise DataError("no frame decoded at the requested times")
        for index in wanted[k:]:
            if previous_rgb is None:
                previous_rgb = reformatter.reformat(previous, format="rgb24").to_ndarray()
            found[index] = previous_rgb
    return np.stack([found[int(i)] for i in indices])


class FrameSource(Protocol):
    """Where clips come from: the video files themselves or the decoded-clip cache."""

    def info(self, item: int) -> VideoInfo:
        """Length and frame rate of video ``item``."""

    def frames(self, item: int, times: np.ndarray) -> np.ndarray:
        """uint8 (len(times), H, W, 3): the frames on screen at ``times`` (seconds, within the video)."""


def frame_indices(times: np.ndarray, info: VideoInfo) -> np.ndarray:
    """Index of the frame on screen at each time (seconds) of a video."""
    return np.clip(np.floor(times * info.fps + 1e-6).astype(np.int64), 0, info.frames - 1)
