"""Video data: Kinetics-layout datasets, the decoded-clip cache and the synthetic benchmark."""

from .cache import ClipCache, cache_root, default_cache_dir
from .kinetics import Split, VideoDataset, fingerprint, read_split, shortest_video
from .synthetic import CLASS_GROUPS, default_dataset, make_synthetic

__all__ = ["VideoDataset", "read_split", "shortest_video", "fingerprint", "Split", "ClipCache", "cache_root",
           "default_cache_dir", "make_synthetic", "default_dataset", "CLASS_GROUPS"]
