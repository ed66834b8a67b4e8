"""Export found architectures to other tools, and import PySlowFast X3D configs.

Formats: ``x3dsearch`` (our YAML, rebuilds the same network, plus trained weights),
``pyslowfast`` (a PySlowFast ``MODEL.ARCH: x3d`` config) and ``pytorchvideo`` (JSON
keyword arguments of ``pytorchvideo.models.x3d.create_x3d``). Both other generators
hard-code parts of the network that our config makes free (see
:func:`pyslowfast_differences`, :func:`pytorchvideo_differences`): such a config is
refused with a one-line error naming the fields, unless ``force`` writes the nearest
expressible network and returns the differences as warnings.

A config exported from a run carries the search's provenance (:func:`run_provenance`): the
proxy schedule, weight inheritance, rungs and seed repeats, and for the final model where its
trained weights started. Our YAML holds it as a ``search:`` mapping beside ``model:``, the
pytorchvideo JSON as ``search``, and the PySlowFast file (whose loader rejects unknown keys)
as header comments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import X3DConfig, preset, round_width
from .cost import count_flops
from .errors import ConfigError, UserError
from .latency import latency_provenance
from .report import config_scores, describe_provenance, provenance
from .rundir import RunDir, load_run

__all__ = ["FORMATS", "CREATE_X3D_SIGNATURE", "select_config", "pyslowfast_differences",
           "pytorchvideo_differences", "to_pyslowfast", "to_pytorchvideo", "from_pyslowfast",
           "export_config", "run_provenance", "preset_schedule", "describe", "export"]

FORMATS = ("x3dsearch", "pyslowfast", "pytorchvideo")

# Keyword arguments of pytorchvideo.models.x3d.create_x3d and the Python type each takes;
# None marks a callable (a class or factory), which JSON cannot hold.
CREATE_X3D_SIGNATURE: dict[str, type | tuple[type, ...] | None] = {
    "input_channel": int, "input_clip_length": int, "input_crop_size": int,
    "model_num_class": int, "dropout_rate": float, "width_factor": float, "depth_factor": float,
    "norm": None, "norm_eps": float, "norm_momentum": float, "activation": None,
    "stem_dim_in": int, "stem_conv_kernel_size": list, "stem_conv_stride": list,
    "stage_conv_kernel_size": list, "stage_spatial_stride": list, "stage_temporal_stride": list,
    "bottleneck": None, "bottleneck_factor": float, "se_ratio": float, "inner_act": None,
    "head_dim_out": int, "head_pool_act": None, "head_bn_lin5_on": bool,
    "head_activation": type(None), "head_output_with_global_average": bool,
}
# The defaults create_x3d uses for the callables, which are what x3dsearch builds.
_CALLABLE_DEFAULTS = {
    "norm": "torch.nn.BatchNorm3d", "activation": "torch.nn.ReLU",
    "bottleneck": "pytorchvideo.models.x3d.create_x3d_bottleneck_block",
    "inner_act": "pytorchvideo.layers.swish.Swish", "head_pool_act": "torch.nn.ReLU",
}
_FIXED_BLOCKS = (1, 2, 5, 3)
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


# -- choosing what to export ----------------------------------------------------------
def select_config(run_dir: str | Path, *, step: int | None = None,
                  best_under_gflops: float | None = None) -> X3DConfig:
    """The config of a run's path step, its best proxy result under a cost, or its final model (default)."""
    run = RunDir(run_dir)
    if not run.exists():
        raise UserError(f"{run_dir} is not a run directory (no run.yaml)")
    path = run.read_path()
    if step is not None:
        steps = {s["step"]: s for s in path.get("steps", [])}
        if step not in steps:
            raise UserError(f"{run_dir} has no path step {step}; steps: {', '.join(map(str, steps)) or 'none'}")
        return X3DConfig.from_dict(steps[step]["config"])
    if best_under_gflops is not None:
        scores = config_scores(load_run(run_dir))  # each config once, scored at its highest rung
        ok = scores[scores["gflops"] <= best_under_gflops]
        if ok.empty or "config" not in ok:
            raise UserError(f"no trained config at or under {best_under_gflops:g} GFLOPs in {run_dir}")
        best = ok.sort_values(["top1", "gflops"], ascending=[False, True]).iloc[0]
        return X3DConfig.from_dict(best["config"])
    if not path.get("final"):
        raise UserError(f"{run_dir} has no final model yet (the search has not finished); "
                        f"use --step N or --best-under-gflops G")
    return X3DConfig.from_dict(path["final"]["config"])


def run_provenance(run_dir: str | Path, *, step: int | None = None,
                   best_under_gflops: float | None = None) -> dict[str, Any]:
    """How the run found the config :func:`select_config` picks: its proxy mechanism and, for the final
    model, where its trained weights started; unknown fields left out."""
    final = step is None and best_under_gflops is None
    exported = ("the final model" if final else f"path step {step}" if step is not None
                else f"the best proxy top-1 at or under {best_under_gflops:g} GFLOPs")
    prov = {"run": str(Path(run_dir).resolve()), "exported": exported, **provenance(run_dir)}
    return {k: v for k, v in prov.items() if v is not None and (final or not k.startswith("final_"))}


def preset_schedule() -> dict[str, Any] | None:
    """The ``kinetics_full`` schedule as a dict when the schedule module ships it, else None."""
    try:
        from .schedule import load_schedule
    except ImportError:
        return None
    try:
        return load_schedule("kinetics_full").to_dict()
    except UserError:
        return None


# -- what each target can express -----------------------------------------------------
def _stage_bases(dim_c1: int) -> list[int]:
    """Stage base widths as PySlowFast and pytorchvideo derive them from the stem (x2, rounded to 8)."""
    bases = [dim_c1]
    for _ in range(len(_FIXED_BLOCKS) - 1):
        bases.append(round_width(bases[-1], 2.0, divisor=8))
    return bases


def _common_differences(config: X3DConfig) -> list[str]:
    """Fields both generators cannot reproduce: stage blocks, and stems whose x2 chain rounds."""
    out = []
    if config.stage_blocks != _FIXED_BLOCKS:
        out.append(f"stage_blocks {list(config.stage_blocks)} (fixed {list(_FIXED_BLOCKS)})")
    ours = [config.stem_width * 2 ** i for i in range(len(config.stage_blocks))]
    if config.stage_blocks == _FIXED_BLOCKS and _stage_bases(config.stem_width) != ours:
        out.append(f"stem_width {config.stem_width} (stage bases {_stage_bases(config.stem_width)} "
                   f"instead of {ours}; use a multiple of 4)")
    return out


def pyslowfast_differences(config: X3DConfig) -> list[str]:
    """What PySlowFast's X3D would build differently from ``config`` (empty: exact)."""
    out = _common_differences(config)
    if config.se_ratio != _PYSLOWFAST_SE:
        out.append(f"se_ratio {config.se_ratio:g} (fixed {_PYSLOWFAST_SE:g})")
    return out


def pytorchvideo_differences(config: X3DConfig) -> list[str]:
    """What ``create_x3d`` would build differently from ``config`` beyond its fixed quirks (empty: exact)."""
    return _common_differences(config)


def _pyslowfast_main_widths(config: X3DConfig) -> str | None:
    """Current PySlowFast rounds width-scaled channels with its shared ``models/utils.round_width``
    (divisor 1), the X3D release with divisor 8 like x3dsearch; say how when this config is affected."""
    bases = [config.stem_width, *_stage_bases(config.stem_width)]
    release = [round_width(b, config.width) for b in bases]
    main = [round_width(b, config.width, divisor=1, min_width=1) for b in bases]
    if release == main:
        return None
    return (f"current PySlowFast (models/utils.round_width, divisor 1) builds stem+stage widths {main} "
            f"instead of {release} (the X3D release code and pytorchvideo build {release})")


def _refuse(target: str, differences: list[str], force: bool) -> None:
    if differences and not force:
        raise ConfigError(f"{target} cannot express this config: {'; '.join(differences)} "
                          f"(pass --force to write the nearest {target} config)")


# -- PySlowFast -----------------------------------------------------------------------
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
    _refuse("PySlowFast", differences, force)
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
    text, name = str(source), "PySlowFast config"
    if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            text, name = path.read_text(), str(path)
        except FileNotFoundError:
            raise ConfigError(f"PySlowFast config not found: {path}") from None
    try:
        data = yaml.safe_load(text)
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
            stage_blocks=_FIXED_BLOCKS, se_ratio=_PYSLOWFAST_SE, dropout=get("MODEL", "DROPOUT_RATE"))
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{name}: {err}") from None
    stem = _common_differences(config)
    if stem:
        raise ConfigError(f"{name}: X3D.DIM_C1 {dim_c1} builds stage widths x3dsearch cannot express: {stem[0]}")
    return config


# -- pytorchvideo ---------------------------------------------------------------------
def to_pytorchvideo(config: X3DConfig, force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """JSON-able ``create_x3d`` keyword arguments for ``config``, and the warnings that go with it."""
    differences = pytorchvideo_differences(config)
    _refuse("pytorchvideo", differences, force)
    kwargs: dict[str, Any] = {
        "input_channel": 3, "input_clip_length": config.frames, "input_crop_size": config.crop,
        "model_num_class": config.num_classes, "dropout_rate": float(config.dropout),
        "width_factor": float(config.width), "depth_factor": float(config.depth),
        "norm_eps": 1e-5, "norm_momentum": 0.1,
        "stem_dim_in": config.stem_width, "stem_conv_kernel_size": [5, 3, 3], "stem_conv_stride": [1, 2, 2],
        "stage_conv_kernel_size": [[3, 3, 3]] * 4, "stage_spatial_stride": [2, 2, 2, 2],
        "stage_temporal_stride": [1, 1, 1, 1], "bottleneck_factor": float(config.bottleneck),
        "se_ratio": float(config.se_ratio), "head_dim_out": config.head_width, "head_bn_lin5_on": False,
        "head_activation": None, "head_output_with_global_average": True,
    }
    note = ("pytorchvideo is not a dependency: these kwargs were not run. Callables are omitted (JSON "
            "cannot hold them); create_x3d's defaults for them are what x3dsearch builds (see "
            "omitted_callables). head_activation None returns logits like x3dsearch (the default softmax "
            "would not). Known differences of create_x3d: res2's strided shortcut has no BatchNorm (its "
            "input and output widths are equal), so weights do not map 1:1; the head pools with a fixed "
            "AvgPool3d sized for this clip, which equals x3dsearch's global pooling at this input size.")
    return {"function": "pytorchvideo.models.x3d.create_x3d", "kwargs": kwargs,
            "omitted_callables": dict(_CALLABLE_DEFAULTS), "_note": note,
            "differences": differences}, list(differences)


# -- writing --------------------------------------------------------------------------
def _header(config: X3DConfig, warnings: list[str], search: Mapping[str, Any] | None) -> str:
    """Comment lines naming the export, the search that found it (when from a run) and the warnings."""
    lines = [f"# exported by x3dsearch: {config.short}, {count_flops(config) / 1e9:.4g} GFLOPs"]
    if search and "latency_ms" in search:
        lines[0] += (f", {search['latency_ms']:.4g} ms per clip measured on {search['latency_device_name']} "
                     f"({search['latency_device']}, batch {search['latency_batch']}, {search['latency_threads']} "
                     f"thread{'s' if search['latency_threads'] > 1 else ''})")
    if search:
        lines += [f"# from {search['exported']} of the search in {search['run']}"]
        lines += [f"# {line}" for line in describe_provenance(search)]
    lines += [f"# WARNING: {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def export_config(config: X3DConfig, fmt: str, out: str | Path, *, schedule: Mapping[str, Any] | None = None,
                  weights: str | Path | None = None, force: bool = False,
                  search: Mapping[str, Any] | None = None) -> list[str]:
    """Write ``config`` in format ``fmt`` to ``out`` (weights beside it for ``x3dsearch``); return warnings.

    ``search`` (:func:`run_provenance`) records how a run found the config; our YAML then nests the
    config under ``model:``, which :meth:`X3DConfig.from_yaml` reads.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    if fmt == "x3dsearch" and search:
        out.write_text(_header(config, warnings, search)
                       + yaml.safe_dump({"model": config.to_dict(), "search": dict(search)}, sort_keys=False))
    elif fmt == "x3dsearch":
        config.to_yaml(out)
    elif fmt == "pyslowfast":
        data, warnings = to_pyslowfast(config, schedule, force)
        out.write_text(_header(config, warnings, search) + yaml.safe_dump(data, sort_keys=False))
    else:
        data, warnings = to_pytorchvideo(config, force)
        out.write_text(json.dumps(dict(data, **({"search": dict(search)} if search else {})), indent=2) + "\n")
    if fmt == "x3dsearch" and weights is not None:
        shutil.copyfile(weights, out.with_suffix(".pt"))
    return warnings


def _is_preset(config: X3DConfig) -> str | None:
    """Name of the preset ``config`` equals, if any (for messages)."""
    from .config import preset_names

    return next((n for n in preset_names() if preset(n) == config), None)


def describe(config: X3DConfig) -> str:
    """One line naming what was exported (preset name when it is one)."""
    name = _is_preset(config)
    return f"{name + ' ' if name else ''}{config.short} ({count_flops(config) / 1e9:.4g} GFLOPs)"


def export(fmt: str, out: str | Path, *, run_dir: str | Path | None = None, model: X3DConfig | None = None,
           step: int | None = None, best_under_gflops: float | None = None,
           force: bool = False) -> tuple[X3DConfig, list[str], Path | None]:
    """Export a run's chosen config (final by default) or a given model (a preset or a config file).

    Returns (config, warnings, weights copied).
    """
    if (run_dir is None) == (model is None):
        raise UserError("give either a RUN_DIR or a model (--preset NAME or --config FILE)")
    weights: Path | None = None
    search: dict[str, Any] | None = None
    if model is not None:
        if step is not None or best_under_gflops is not None:
            raise UserError("--step and --best-under-gflops choose from a RUN_DIR, not a --preset or --config")
        config, schedule = model, preset_schedule()
    else:
        assert run_dir is not None
        config = select_config(run_dir, step=step, best_under_gflops=best_under_gflops)
        schedule = RunDir(run_dir).settings().get("full")
        trained = RunDir(run_dir).final_dir / "model.pt"
        if fmt == "x3dsearch" and step is None and best_under_gflops is None and trained.is_file():
            weights = trained
        search = {**run_provenance(run_dir, step=step, best_under_gflops=best_under_gflops),
                  **latency_provenance(run_dir, config)}
    warnings = export_config(config, fmt, out, schedule=schedule, weights=weights, force=force, search=search)
    return config, warnings, Path(out).with_suffix(".pt") if weights else None
