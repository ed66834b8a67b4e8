"""Is the synthetic benchmark's encoding reproducible? Encode one rendered video repeatedly in one process.

``make_synthetic`` renders each video deterministically and encodes it with libx264 (crf 18, one
thread). This encodes the same rendered frames ``--repeats`` times with given x264 options and
prints how many distinct byte streams and distinct decoded pixel arrays came out (1 and 1 means
reproducible).

    .venv/bin/python experiments/encode_determinism.py                          # the shipped settings
    .venv/bin/python experiments/encode_determinism.py --options qp=0 preset=fast  # lossless
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import av
import numpy as np

from x3dsearch.data import synthetic


def encode_and_hash(video: np.ndarray, options: dict[str, str], path: Path) -> tuple[str, str]:
    """(md5 of the file, md5 of its decoded rgb24 frames) after one encode with ``options``."""
    synthetic._encode(path, video, 30, options)
    with av.open(str(path)) as container:
        pixels = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return hashlib.md5(path.read_bytes()).hexdigest(), hashlib.md5(pixels.tobytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", nargs="+", metavar="KEY=VALUE",
                        default=[f"{k}={v}" for k, v in synthetic._X264_OPTIONS.items()])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    options = dict(o.split("=", 1) for o in args.options)
    job = synthetic._Job(path=Path("unused.mp4"), seed=0, split="train", label="flicker-0.3hz", index=0,
                         side=64, frames=120, fps=30)
    video = synthetic._render(job)
    with tempfile.TemporaryDirectory() as tmp:
        hashes = [encode_and_hash(video, options, Path(tmp) / "v.mp4") for _ in range(args.repeats)]
    print(f"options {options}: {len({b for b, _ in hashes})} distinct byte streams, "
          f"{len({p for _, p in hashes})} distinct decoded videos in {args.repeats} encodes")


if __name__ == "__main__":
    main()
