"""pytorchvideo: a found config as JSON keyword arguments of ``pytorchvideo.models.x3d.create_x3d``."""

from __future__ import annotations

from typing import Any

from .config import X3DConfig
from .generators import common_differences, refuse

__all__ = ["CREATE_X3D_SIGNATURE", "pytorchvideo_differences", "to_pytorchvideo"]

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


def pytorchvideo_differences(config: X3DConfig) -> list[str]:
    """What ``create_x3d`` would build differently from ``config`` beyond its fixed quirks (empty: exact)."""
    return common_differences(config)


def to_pytorchvideo(config: X3DConfig, force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """JSON-able ``create_x3d`` keyword arguments for ``config``, and the warnings that go with it."""
    differences = pytorchvideo_differences(config)
    refuse("pytorchvideo", differences, force)
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
