import random

import numpy as np
import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from x3dsearch import build_model, count_flops, count_params, expand, preset
from x3dsearch.cost import channelwise_flops
from x3dsearch.space import load_space

PAPER_GFLOPS = {"XS": 0.60, "S": 1.96, "M": 4.73, "L": 18.37, "XL": 35.84}
PAPER_PARAMS = {"XS": 3.76e6, "S": 3.76e6, "M": 3.76e6, "L": 6.08e6, "XL": 11.0e6}


def _fvcore_conv_linear(config):
    model = build_model(config).eval()
    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, config.frames, config.crop, config.crop))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    return by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0)


@pytest.mark.parametrize("name", list(PAPER_GFLOPS))
def test_presets_match_published_table(name):
    config = preset(name)
    assert count_flops(config) / 1e9 == pytest.approx(PAPER_GFLOPS[name], rel=0.01)
    assert count_params(config) == pytest.approx(PAPER_PARAMS[name], rel=0.02)


def test_exact_published_counts():
    assert count_flops(preset("XS")) == 605_256_512
    assert count_flops(preset("M")) == 4_732_468_736
    assert round(count_flops(preset("X2D")) / 1e9, 3) == 0.008


def _random_configs(n, seed=0):
    space = load_space()
    rng = random.Random(seed)
    start = space.start.replace(num_classes=rng.choice([3, 10, 400]))
    configs = []
    while len(configs) < n:
        config = start
        for _ in range(rng.randint(0, 4)):
            axis = rng.choice(list(space.axes))
            config = expand(config, axis, fraction=rng.choice([1.0, 1.0, 0.5, 0.3]), space=space)
        configs.append(config)
    return configs


@pytest.mark.parametrize("config", _random_configs(50), ids=lambda c: c.short)
def test_closed_form_equals_fvcore_and_module(config):
    assert count_flops(config) == _fvcore_conv_linear(config)
    assert count_params(config) == sum(p.numel() for p in build_model(config).parameters())


def test_flops_override_input_size():
    config = preset("XS")
    assert count_flops(config, frames=8) > count_flops(config)
    assert count_flops(config, frames=4, crop=160) == count_flops(config)


@pytest.mark.parametrize("name", ["X2D", "XS", "M"])
def test_channelwise_flops_count_the_grouped_convs(name: str) -> None:
    """The channelwise share equals the multiply-adds of the network's grouped convs, counted by hooks."""
    config = preset(name, num_classes=10)
    counted = []

    def hook(module, inputs, output) -> None:
        if module.groups > 1:
            counted.append(output.numel() * module.in_channels // module.groups * int(np.prod(module.kernel_size)))

    model = build_model(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, config.frames, config.crop, config.crop))
    assert channelwise_flops(config) == sum(counted) > 0
