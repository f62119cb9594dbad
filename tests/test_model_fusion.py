"""Re-parameterisation: the pure tensor functions, one block, and every official variant end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repvgg_model import VARIANTS, create_model, fuse_model, get_variant, randomize_model
from repvgg_model.errors import ModelError
from repvgg_model.fusion import fold_batchnorm, identity_kernel, pad_1x1_to_3x3, sum_branches
from repvgg_model.model import RepVGGBlock, RepVGGplus, repvgg_blocks
from repvgg_model.variants import GROUPWISE_LAYERS

TOLERANCE = 1e-4  # relative to max|logit|, as pth2onnx checks


def random_bn(channels: int, generator: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=generator)
        bn.bias.normal_(0, 0.3, generator=generator)
        bn.running_mean.normal_(0, 0.5, generator=generator)
        bn.running_var.uniform_(0.3, 3.0, generator=generator)
    return bn


def random_model(arch: str, num_classes: int, x: torch.Tensor) -> nn.Module:
    """A randomised train-time model calibrated on `x`, built without the default init (randomize overwrites it)."""
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes)
    model.to_empty(device="cpu")
    return randomize_model(model, seed=3, calibration_inputs=x, spread_logits=False)


def test_fold_batchnorm_equals_conv_then_bn():
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=False)
    bn = random_bn(8, g)
    x = torch.randn(2, 6, 9, 9, generator=g)
    kernel, bias = fold_batchnorm(conv.weight, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, kernel, bias, padding=1), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_pad_1x1_puts_the_weight_in_the_centre():
    kernel = torch.randn(4, 3, 1, 1)
    padded = pad_1x1_to_3x3(kernel)
    assert padded.shape == (4, 3, 3, 3)
    x = torch.randn(1, 3, 7, 7)
    torch.testing.assert_close(F.conv2d(x, padded, padding=1), F.conv2d(x, kernel))
    with pytest.raises(ValueError):
        pad_1x1_to_3x3(torch.randn(4, 3, 3, 3))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_identity_kernel_reproduces_the_input_for_grouped_convs(groups: int):
    x = torch.randn(2, 8, 5, 5)
    kernel = identity_kernel(8, groups)
    assert kernel.shape == (8, 8 // groups, 3, 3)
    torch.testing.assert_close(F.conv2d(x, kernel, padding=1, groups=groups), x)
    with pytest.raises(ValueError):
        identity_kernel(6, 4)


def test_sum_branches_skips_absent_ones():
    a, b = (torch.ones(2, 1, 3, 3), torch.ones(2)), (2 * torch.ones(2, 1, 3, 3), torch.zeros(2))
    kernel, bias = sum_branches(a, None, b)
    assert torch.equal(kernel, 3 * torch.ones(2, 1, 3, 3)) and torch.equal(bias, torch.ones(2))


@pytest.mark.parametrize(("cin", "cout", "stride", "groups", "se"), [
    (8, 8, 1, 1, None), (8, 8, 1, 4, None), (8, 16, 2, 1, None), (16, 16, 1, 2, "se"), (16, 16, 1, 1, "post_se"),
])
def test_block_fuses_to_the_same_function(cin, cout, stride, groups, se):
    g = torch.Generator().manual_seed(cin + cout + stride + groups)
    block = RepVGGBlock(cin, cout, stride, groups, se=se, se_reduction=4).eval()
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.load_state_dict(random_bn(module.num_features, g).state_dict())
    assert (block.rbr_identity is not None) == (cin == cout and stride == 1)
    x = torch.randn(3, cin, 10, 10, generator=g)
    with torch.no_grad():
        before = block(x)
        block.reparameterize()
        after = block(x)
    assert block.is_fused and not hasattr(block, "rbr_dense")
    assert block.rbr_reparam.groups == groups and block.rbr_reparam.stride == (stride, stride)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_variant_table_matches_the_published_architectures():
    a0 = get_variant("RepVGG-A0")
    assert get_variant("a0") is a0 and get_variant("repvgg_a0") is a0 and get_variant("REPVGG-A0") is a0
    assert get_variant("L2pse") is get_variant("RepVGGplus-L2pse")
    assert a0.stem_channels == 48 and a0.stage_channels == (48, 96, 192, 1280)
    assert get_variant("B0").stem_channels == 64 and get_variant("B3").stage_channels == (192, 384, 768, 2560)
    assert get_variant("D2se").input_size == 320 and get_variant("B1").input_size == 224
    assert len(VARIANTS) == 15
    with pytest.raises(ModelError, match="unknown RepVGG variant"):
        get_variant("C7")


def test_grouped_layers_are_the_official_ones():
    model = create_model("B1g4")
    blocks = [b for k in range(1, 5) for b in getattr(model, f"stage{k}")]
    groups = {i + 1: b.rbr_dense.conv.groups for i, b in enumerate(blocks)}
    assert {i for i, g in groups.items() if g == 4} == set(GROUPWISE_LAYERS)
    assert set(groups.values()) == {1, 4} and model.stage0.rbr_dense.conv.groups == 1


def test_official_key_names():
    keys = set(create_model("A0").state_dict())
    assert {"stage0.rbr_dense.conv.weight", "stage0.rbr_1x1.bn.running_var", "stage1.1.rbr_identity.weight",
            "stage3.13.rbr_dense.bn.num_batches_tracked", "linear.weight", "linear.bias"} <= keys
    assert not any("identity" in k for k in keys if k.startswith(("stage0.", "stage1.0.")))
    with torch.device("meta"):
        d2se = set(create_model("D2se").state_dict())
    assert {"stage0.se.down.weight", "stage0.se.up.bias", "stage4.0.se.down.weight"} <= d2se
    with torch.device("meta"):
        plus = set(create_model("RepVGGplus-L2pse").state_dict())
    assert {"stage3_first.blocks.11.post_se.up.weight", "stage3_second.blocks.0.rbr_identity.running_mean",
            "stage1_aux.0.conv.weight", "stage1_aux.0.bn.running_var", "stage3_first_aux.3.weight"} <= plus
    deploy = set(create_model("A0", deploy=True).state_dict())
    assert deploy == {f"{p}.rbr_reparam.{t}" for p in ["stage0"] + [
        f"stage{k}.{j}" for k, n in zip(range(1, 5), (2, 4, 14, 1), strict=True) for j in range(n)]
        for t in ("weight", "bias")} | {"linear.weight", "linear.bias"}


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_every_variant_fused_equals_train_time(arch: str):
    """Fused == train-time for every official variant, on a small input (32x32) to keep even B3/D2se/L2pse quick.

    Compared in float64: randomly initialised deep RepVGGs (D2se, L2pse: 48 blocks) can be
    chaotic in eval mode, amplifying float32 rounding by orders of magnitude, which would hide
    what this test is about, the fusion math. (pth2onnx and the CLI tests check float32.)
    """
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model = random_model(arch, 10, x).double()
    with torch.no_grad():
        expected = model(x.double())
        fused, count = fuse_model(model)
        got = fused(x.double())
    assert count == len(repvgg_blocks(model)) == 1 + sum(get_variant(arch).num_blocks)
    assert all(b.is_fused for b in repvgg_blocks(fused)) and not any(b.is_fused for b in repvgg_blocks(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert torch.isfinite(expected).all() and expected.abs().max() > 0
    assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max()
    with torch.device("meta"):
        deploy_keys = set(create_model(arch, num_classes=10, deploy=True).state_dict())
    assert set(fused.state_dict()) == deploy_keys


def test_repvggplus_aux_heads_exist_in_training_form_only():
    x = torch.randn(2, 3, 32, 32)
    model = random_model("L2pse", 7, x)
    assert isinstance(model, RepVGGplus)
    with torch.no_grad():
        outputs = model.forward_train(x)
        assert set(outputs) == {"main", "stage1_aux", "stage2_aux", "stage3_first_aux"}
        assert all(v.shape == (2, 7) for v in outputs.values())
        torch.testing.assert_close(outputs["main"], model(x))
        fused, _ = fuse_model(model)
    assert not any(name.endswith("_aux") for name, _ in fused.named_children())
