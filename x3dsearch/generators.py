"""What PySlowFast's and pytorchvideo's X3D generators share and x3dsearch's configs make free: the fixed stage
layout, stage widths derived from the stem, and the one-line refusal of a config they cannot express."""

from __future__ import annotations

from .config import X3DConfig, round_width
from .errors import ConfigError

__all__ = ["FIXED_BLOCKS", "stage_bases", "common_differences", "refuse"]

FIXED_BLOCKS = (1, 2, 5, 3)


def stage_bases(dim_c1: int) -> list[int]:
    """Stage base widths as PySlowFast and pytorchvideo derive them from the stem (x2, rounded to 8)."""
    bases = [dim_c1]
    for _ in range(len(FIXED_BLOCKS) - 1):
        bases.append(round_width(bases[-1], 2.0, divisor=8))
    return bases


def common_differences(config: X3DConfig) -> list[str]:
    """Fields both generators cannot reproduce: stage blocks, and stems whose x2 chain rounds."""
    out = []
    if config.stage_blocks != FIXED_BLOCKS:
        out.append(f"stage_blocks {list(config.stage_blocks)} (fixed {list(FIXED_BLOCKS)})")
    ours = [config.stem_width * 2 ** i for i in range(len(config.stage_blocks))]
    if config.stage_blocks == FIXED_BLOCKS and stage_bases(config.stem_width) != ours:
        out.append(f"stem_width {config.stem_width} (stage bases {stage_bases(config.stem_width)} "
                   f"instead of {ours}; use a multiple of 4)")
    return out


def refuse(target: str, differences: list[str], force: bool) -> None:
    """Raise the one-line refusal naming ``differences`` unless ``force`` writes the nearest config."""
    if differences and not force:
        raise ConfigError(f"{target} cannot express this config: {'; '.join(differences)} "
                          f"(pass --force to write the nearest {target} config)")
