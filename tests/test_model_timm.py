"""Against an independent implementation: timm's `repvgg_*` models (the PyPI package's own code and forward).

timm's weights are random here (the official ones cannot be downloaded), with randomised
BatchNorm statistics; the state_dict timm saves goes through our loader, fusion and ONNX
export, and the result must compute what timm's own forward computes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from repvgg_model import fuse_model, load_checkpoint
from repvgg_model.export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session
from tests.conftest import run_script

timm = pytest.importorskip("timm")
from timm.utils.model import reparameterize_model  # noqa: E402

TOLERANCE = 1e-4


def random_timm(name: str, x: torch.Tensor, num_classes: int = 1000) -> nn.Module:
    """timm model with random weights; BN gamma/beta random and running statistics measured on `x`."""
    torch.manual_seed(11)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.4, 1.0)
                module.bias.normal_(0, 0.2)
                module.momentum = None
        model.train()
        model(x)
    return model.eval()


def relative_error(got: np.ndarray | torch.Tensor, expected: torch.Tensor) -> float:
    got = torch.as_tensor(np.asarray(got), dtype=torch.float64)
    return float((got - expected.double()).abs().max() / expected.abs().max())


def test_timm_a0_checkpoint_through_pth2onnx_matches_timm(tmp_path):
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    model = random_timm("repvgg_a0", x)
    with torch.no_grad():
        expected = model(x)
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "timm_a0.pth")
    proc = run_script("pth2onnx.py", tmp_path / "timm_a0.pth", tmp_path / "a0.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "variant: RepVGG-A0" in proc.stdout and "format: timm-train" in proc.stdout
    assert "22 blocks fused" in proc.stdout
    (got,) = onnx_session(tmp_path / "a0.onnx").run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    assert relative_error(got, expected) <= TOLERANCE
    assert np.array_equal(got.argmax(1), expected.argmax(1).numpy())


def test_timm_b1g4_small_input_onnx_matches_timm(tmp_path):
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model = random_timm("repvgg_b1g4", x, num_classes=100)
    with torch.no_grad():
        expected = model(x)
    torch.save(model.state_dict(), tmp_path / "b1g4.pth")
    loaded = load_checkpoint(tmp_path / "b1g4.pth")
    assert (loaded.arch, loaded.layout, loaded.num_classes) == ("RepVGG-B1g4", "timm-train", 100)
    fused, count = fuse_model(loaded.model)
    assert count == 28
    proto = export_onnx(fused, tmp_path / "b1g4.onnx", input_size=64)
    assert {n.op_type for n in proto.graph.node} == {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"}
    assert any(a.name == "group" and a.i == 4 for n in proto.graph.node for a in n.attribute)
    (got,) = onnx_session(tmp_path / "b1g4.onnx").run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    assert relative_error(got, expected) <= TOLERANCE


def test_timm_fused_checkpoint_loads(tmp_path):
    """timm's own re-parameterisation (`reparam_conv` keys) loads as a fused model computing the same."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model = reparameterize_model(random_timm("repvgg_a0", x, num_classes=10))
    with torch.no_grad():
        expected = model(x)
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "fused.pth")
    loaded = load_checkpoint(tmp_path / "fused.pth")
    assert loaded.layout == "timm-fused" and loaded.prefixes == ["module."]
    with torch.no_grad():
        assert relative_error(loaded.model(x), expected) <= TOLERANCE


def test_timm_d2se_matches_timm_in_float64(tmp_path):
    """D2se (SE before the ReLU, in the stem too). Float64: a random 48-block net amplifies float32 rounding."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    model = random_timm("repvgg_d2se", x, num_classes=10).double()
    with torch.no_grad():
        expected = model(x.double())
    torch.save(model.float().state_dict(), tmp_path / "d2se.pth")
    loaded = load_checkpoint(tmp_path / "d2se.pth")
    assert (loaded.arch, loaded.layout) == ("RepVGG-D2se", "timm-train")
    fused, _ = fuse_model(loaded.model.double())
    model.double()
    with torch.no_grad():
        assert relative_error(loaded.model(x.double()), model(x.double())) <= 1e-6
        assert relative_error(fused(x.double()), expected) <= 1e-6
    proto = export_onnx(fused.float(), tmp_path / "d2se.onnx", input_size=64)
    onnx.checker.check_model(proto)
    assert {n.op_type for n in proto.graph.node} <= {"Conv", "Relu", "GlobalAveragePool", "Sigmoid", "Mul",
                                                     "Flatten", "Gemm"}
