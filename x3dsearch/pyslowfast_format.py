"""PySlowFast: a found config as a ``MODEL.ARCH: x3d`` config with the run's recipe as SOLVER
(:func:`to_pyslowfast`), and a PySlowFast X3D config read back as an X3DConfig (:func:`from_pyslowfast`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import X3DConfig, round_width
from .errors import ConfigError
from .fields import load_yaml, read_yaml
from .generators import FIXED_BLOCKS, common_differences, refuse, stage_bases

__all__ = ["pyslowfast_differences", "to_pyslowfast", "from_pyslowfast"]

_PYSLOWFAST_SE = 0.0625
# PySlowFast defaults (slowfast/config/defaults.py) for keys a config file may leave out.
_PYSLOWFAST_DEFAULTS = {
    ("X3D", "WIDTH_FACTOR"): 1.0, ("X3D", "DEPTH_FACTOR"): 1.0, ("X3D", "BOTTLENECK_FACTOR"): 1.0,
    ("X3D", "DIM_C1"): 12, ("X3D", "DIM_C5"): 2048, ("X3D", "SCALE_RES2"): False,
    ("X3D", "BN_LIN5"): False, ("X3D", "CHANNELWISE_3x3x3"): True,
    ("DATA", "NUM_FRAMES"): 8, ("DATA", "SAMPLING_RATE"): 8, ("DATA", "TRAIN_CROP_SIZE"): 224,
    ("DATA", "INPUT_CHANNEL_NUM"): [3], ("MODEL", "NUM_CLASSES"): 400, ("MODEL", "DROPOUT_RATE"): 0.5,
    ("MODEL", "ARCH"): "x3d", ("RESNET", "TRANS_FUNC"): "x3d_transform", ("RESNET", "STRIDE_1X1"): False,
}
# Schedule fields (run.yaml ``full``) -> PySlowFast SOLVER keys.
_SOLVER_KEYS = {"base_lr": "BASE_LR", "epochs": "MAX_EPOCH", "momentum": "MOMENTUM",
                "weight_decay": "WEIGHT_DECAY", "warmup_epochs": "WARMUP_EPOCHS"}


def pyslowfast_differences(config: X3DConfig) -> list[str]:
    """What PySlowFast's X3D would build differently from ``config`` (empty: exact)."""
    out = common_differences(config)
    if config.se_ratio != _PYSLOWFAST_SE:
        out.append(f"se_ratio {config.se_ratio:g} (fixed {_PYSLOWFAST_SE:g})")
    return out


def _pyslowfast_main_widths(config: X3DConfig) -> str | None:
    """Current PySlowFast rounds width-scaled channels with its shared ``models/utils.round_width``
    (divisor 1), the X3D release with divisor 8 like x3dsearch; say how when this config is affected."""
    bases = [config.stem_width, *stage_bases(config.stem_width)]
    release = [round_width(b, config.width) for b in bases]
    main = [round_width(b, config.width, divisor=1, min_width=1) for b in bases]
    if release == main:
        return None
    return (f"current PySlowFast (models/utils.round_width, divisor 1) builds stem+stage widths {main} "
            f"instead of {release} (the X3D release code and pytorchvideo build {release})")


def _jitter_scales(crop: int) -> list[int]:
    """Short-side training scales crop*8/7 .. crop*10/7, as PySlowFast's X3D configs (224 -> 256, 320)."""
    return [int(crop * 8 / 7), int(crop * 10 / 7)]


def _solver(schedule: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """SOLVER and TRAIN sections from a schedule dict (fields it lacks are left to PySlowFast; a schedule
    written before the ``optimizer`` field trained with SGD).

    Our ``base_lr`` is quoted at ``ref_batch_size`` and scaled linearly to ``batch_size``;
    PySlowFast's BASE_LR is the rate at TRAIN.BATCH_SIZE, so the scaled rate is written.
    """
    solver: dict[str, Any] = {key: schedule[name] for name, key in _SOLVER_KEYS.items()
                              if schedule.get(name) is not None}
    batch = schedule.get("batch_size")
    if "BASE_LR" in solver and batch and schedule.get("ref_batch_size"):
        solver["BASE_LR"] = float(solver["BASE_LR"]) * batch / schedule["ref_batch_size"]
    # PySlowFast spells our two optimisers the same way; its AdamW takes betas (0.9, 0.999), ours (momentum, 0.999)
    solver.update({"LR_POLICY": "cosine", "OPTIMIZING_METHOD": schedule.get("optimizer") or "sgd"})
    return solver, ({"BATCH_SIZE": batch} if batch else {})


def to_pyslowfast(config: X3DConfig, schedule: Mapping[str, Any] | None = None,
                  force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A PySlowFast X3D config dict for ``config`` and the warnings that go with it."""
    differences = pyslowfast_differences(config)
    refuse("PySlowFast", differences, force)
    warnings = list(differences)
    version_note = _pyslowfast_main_widths(config)
    if version_note:
        warnings.append(version_note)
    data: dict[str, Any] = {
        "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": config.num_classes,
                  "DROPOUT_RATE": config.dropout, "LOSS_FUNC": "cross_entropy"},
        "X3D": {"WIDTH_FACTOR": config.width, "DEPTH_FACTOR": config.depth,
                "BOTTLENECK_FACTOR": config.bottleneck, "DIM_C1": config.stem_width,
                "DIM_C5": config.head_width, "SCALE_RES2": False, "CHANNELWISE_3x3x3": True,
                "BN_LIN5": False},
        "DATA": {"NUM_FRAMES": config.frames, "SAMPLING_RATE": config.stride,
                 "TRAIN_JITTER_SCALES": _jitter_scales(config.crop), "TRAIN_CROP_SIZE": config.crop,
                 "TEST_CROP_SIZE": config.crop, "INPUT_CHANNEL_NUM": [3]},
        "RESNET": {"DEPTH": 50, "TRANS_FUNC": "x3d_transform", "STRIDE_1X1": False,
                   "ZERO_INIT_FINAL_BN": True},
    }
    if schedule is not None:
        solver, train = _solver(schedule)
        data["SOLVER"] = solver
        if train:
            data["TRAIN"] = train
    return data, warnings


def _load_mapping(source: str | Path) -> tuple[dict[str, Any], str]:
    """Parse a YAML file path or YAML text; return the mapping and a name for messages."""
    name = "PySlowFast config"
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml"))):
        data, name = read_yaml(source, name), str(source)
    else:
        try:
            data = load_yaml(source)
        except yaml.YAMLError as err:
            raise ConfigError(f"{name}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping of sections (MODEL, X3D, DATA, ...)")
    return dict(data), name


def from_pyslowfast(source: str | Path) -> X3DConfig:
    """The X3DConfig a PySlowFast X3D config (file path or YAML text) builds; unsupported values are errors."""
    data, name = _load_mapping(source)

    def get(section: str, key: str) -> Any:
        block = data.get(section) or {}
        if not isinstance(block, Mapping):
            raise ConfigError(f"{name}: {section} must be a mapping")
        return block.get(key, _PYSLOWFAST_DEFAULTS[(section, key)])

    required = {("MODEL", "ARCH"): "x3d", ("RESNET", "TRANS_FUNC"): "x3d_transform",
                ("RESNET", "STRIDE_1X1"): False, ("X3D", "SCALE_RES2"): False, ("X3D", "BN_LIN5"): False,
                ("X3D", "CHANNELWISE_3x3x3"): True, ("DATA", "INPUT_CHANNEL_NUM"): [3]}
    wrong = [f"{s}.{k}: {get(s, k)!r} (supported: {v!r})" for (s, k), v in required.items() if get(s, k) != v]
    if wrong:
        raise ConfigError(f"{name}: unsupported value(s) {'; '.join(wrong)}")
    dim_c1 = get("X3D", "DIM_C1")
    try:
        config = X3DConfig(
            stride=get("DATA", "SAMPLING_RATE"), frames=get("DATA", "NUM_FRAMES"),
            crop=get("DATA", "TRAIN_CROP_SIZE"), width=get("X3D", "WIDTH_FACTOR"),
            bottleneck=get("X3D", "BOTTLENECK_FACTOR"), depth=get("X3D", "DEPTH_FACTOR"),
            num_classes=get("MODEL", "NUM_CLASSES"), stem_width=dim_c1, head_width=get("X3D", "DIM_C5"),
            stage_blocks=FIXED_BLOCKS, se_ratio=_PYSLOWFAST_SE, dropout=get("MODEL", "DROPOUT_RATE"))
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{name}: {err}") from None
    stem = common_differences(config)
    if stem:
        raise ConfigError(f"{name}: X3D.DIM_C1 {dim_c1} builds stage widths x3dsearch cannot express: {stem[0]}")
    return config
