"""Tiny test videos whose frames encode their own index, so tests can check which frames were sampled."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_value(index: int) -> int:
    """Grey level of frame ``index`` of a counter video."""
    return 16 + 12 * index


def write_counter_video(path: Path, frames: int = 16, fps: int = 30, width: int = 32, height: int = 32) -> Path:
    """A lossless-ish H.264 video whose frame i is uniform grey ``frame_value(i)``."""
    return _write(path, [np.full((height, width, 3), frame_value(i), dtype=np.uint8) for i in range(frames)], fps)


def write_ramp_video(path: Path, frames: int = 4, side: int = 32) -> Path:
    """A video dark on the left and bright on the right, so a mirrored clip shows it."""
    ramp = np.linspace(20, 230, side).astype(np.uint8)
    return _write(path, [np.broadcast_to(ramp[None, :, None], (side, side, 3)).copy()] * frames, 30)


def _write(path: Path, images: list[np.ndarray], fps: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.codec_context.thread_count = 1
        for rgb in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_index(clip_frame: np.ndarray) -> float:
    """The counter index a (de-normalised or raw) grey frame shows."""
    return (float(clip_frame.mean()) - 16) / 12
