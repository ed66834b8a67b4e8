import pytest
import torch

from x3dsearch import build_model, preset
from x3dsearch.model import fold_batchnorm


@pytest.mark.parametrize("frames, side", [(1, 32), (3, 48), (5, 40), (8, 33)])
def test_fully_convolutional_any_input(frames, side):
    model = build_model(preset("XS", num_classes=5)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, frames, side, side))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_structure_of_x2d_basis():
    model = build_model(preset("X2D"))
    assert [len(stage) for stage in model.stages] == [1, 2, 5, 3]
    stem_xy, stem_t = model.stem[0], model.stem[1]
    assert stem_xy.kernel_size == (1, 3, 3) and stem_t.kernel_size == (5, 1, 1)
    # the published rounding rule takes the basis width 12 to 16 channels even at width 1.0
    assert stem_t.groups == stem_t.in_channels == 16
    assert [stage[0].c.out_channels for stage in model.stages] == [16, 24, 48, 96]
    block = model.stages[2][0]
    assert block.b.kernel_size == (3, 3, 3) and block.b.groups == block.b.in_channels
    # squeeze-excitation on every other block
    assert [not isinstance(b.se, torch.nn.Identity) for b in model.stages[2]] == [True, False, True, False, True]
    assert model.lin5.out_channels == 2048 and model.classifier.out_features == 400


def test_m_widths():
    model = build_model(preset("M"))
    assert [stage[0].c.out_channels for stage in model.stages] == [24, 48, 96, 192]
    assert [len(stage) for stage in model.stages] == [3, 5, 11, 7]
    assert model.conv5[0].out_channels == 432


def test_standard_layout_input_runs_channels_last_inside_and_gives_the_same_logits():
    model = build_model(preset("XS", num_classes=5), fast=True).eval()
    seen = []
    model.stem[0].register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    clips = torch.randn(2, 3, 4, 40, 40)
    with torch.no_grad():
        standard = model(clips)
        channels_last = model(clips.contiguous(memory_format=torch.channels_last_3d))
    assert seen == [True, True]
    torch.testing.assert_close(standard, channels_last, rtol=0, atol=0)
    reference = build_model(preset("XS", num_classes=5), fast=False).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reference(clips), standard, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_folded_batchnorm_gives_the_eval_logits_and_leaves_the_model_alone(fast):
    torch.manual_seed(0)
    model = build_model(preset("XS", num_classes=5).replace(depth=1.0), fast=fast)
    for m in model.modules():  # trained-looking BatchNorms: every statistic and affine term non-trivial
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.classifier.weight.data *= 100  # logits large enough for the tolerance below to mean something
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 4, 32, 32)
    folded = fold_batchnorm(model.train())
    with torch.no_grad():
        expected, actual = model.eval()(x), folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
