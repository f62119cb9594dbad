"""The FP16 preview against an independent float16 emulation in PyTorch, on real ImageNet images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from repvgg_model import fuse_model, load_checkpoint, write_random_checkpoint
from repvgg_model.export import export_onnx
from repvgg_pipeline.cli import UserError
from repvgg_pipeline.dataset import load_eval_batch
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.fp16_preview import (
    FP16,
    FP32,
    PRECISION_MODES,
    check_casts_survive,
    resolve_precision_mode,
    rewrite_fp16,
)
from tests.conftest import assert_one_line_error, run_script

IMAGES = 32


def is_fp16_value(array: np.ndarray) -> bool:
    """Every element is exactly a float16 value (checked through numpy's own conversion)."""
    return bool(np.array_equal(array, array.astype(np.float16).astype(np.float32), equal_nan=True))


@torch.no_grad()
def fp16_emulation(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Independent of the ONNX rewrite: the fused PyTorch network with its weights, its input and the output of
    every module rounded to float16 (torch's `.half()`), each module computed in float32."""
    model = model.eval()
    originals = {name: p.detach().clone() for name, p in model.named_parameters()}
    for param in model.parameters():
        param.copy_(param.half().float())
    hooks = [m.register_forward_hook(lambda _m, _i, out: out.half().float())
             for m in model.modules() if not list(m.children())]
    try:
        return model(torch.from_numpy(images).half().float()).numpy()
    finally:
        for hook in hooks:
            hook.remove()
        for name, param in model.named_parameters():
            param.copy_(originals[name])


# ---------------------------------------------------------------- precision modes

def test_every_atc_precision_mode_is_accepted():
    assert resolve_precision_mode("force_fp16").kind == FP16 and resolve_precision_mode("force_fp16").note is None
    assert resolve_precision_mode("must_keep_origin_dtype").kind == FP32
    assert resolve_precision_mode(None).kind == FP32  # no flag: plain float32
    for mode in ("allow_fp32_to_fp16", "allow_mix_precision", "allow_mix_precision_fp16", "allow_mix_precision_bf16",
                 "force_fp32", "cube_fp16in_fp32out", "force_lowerprecision", "allow_fp32_to_bf16"):
        assert mode in PRECISION_MODES
        choice = resolve_precision_mode(mode.upper())
        assert choice.kind == FP16 and choice.note  # approximated: says how
    with pytest.raises(UserError, match="force_fp16"):
        resolve_precision_mode("fp8")


# ---------------------------------------------------------------- the rewrite on a small net

@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = tmp_path_factory.mktemp("fp16") / "small.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 20, 20), str(path), input_names=["x"], output_names=["y"],
                      opset_version=11, dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return net, path


def test_rewrite_rounds_weights_and_keeps_conv_relu_adjacent(small_net):
    _, path = small_net
    rewritten, stats = rewrite_fp16(onnx.load(str(path)))
    assert stats.initializers == 6 and stats.cast_pairs == 5  # input, 2x after Relu, after Flatten, output
    for init in rewritten.graph.initializer:
        assert is_fp16_value(onnx.numpy_helper.to_array(init))
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops[:2] == ["Cast", "Cast"] and ops[-2:] == ["Cast", "Cast"]
    for i, op in enumerate(ops):
        if op == "Conv":
            assert ops[i + 1] == "Relu"  # rounding moved past the Relu: ONNX Runtime may fuse Conv+Relu
    assert [o.name for o in rewritten.graph.output] == ["y"] and rewritten.graph.input[0].name == "x"


def test_small_net_matches_the_emulation_to_the_last_float16_bit(small_net):
    net, path = small_net
    rewritten, _ = rewrite_fp16(onnx.load(str(path)))
    session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((8, 3, 20, 20)).astype(np.float32) * 3
    got = session.run(None, {"x": x})[0]
    want = fp16_emulation(net, x)
    assert is_fp16_value(got)
    # same float16 inputs, float32 accumulation in another order: equal, or one float16 step apart at most
    step = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32)
    assert (np.abs(got - want) <= step).all()
    assert (got == want).mean() > 0.9


def test_onnx_runtime_keeps_the_cast_pairs():
    check_casts_survive(None)  # raises when an optimiser folded them at the backend's settings


def test_cast_pair_rounds_to_nearest_even_like_numpy(small_net):
    """Ties, subnormals, overflow: ONNX Runtime's Cast must round exactly as numpy's astype(float16)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
         helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ties = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2048 + 1, 2048 + 3, 65519.0, 65520.0, 1e-8, 3e-5],
                    dtype=np.float32)
    values = np.concatenate([ties, -ties, np.random.default_rng(1).standard_normal(100_000).astype(np.float32) * 50])
    with np.errstate(over="ignore"):  # 65520 rounds to inf in float16, in both
        np.testing.assert_array_equal(session.run(None, {"x": values})[0],
                                      values.astype(np.float16).astype(np.float32))


# ---------------------------------------------------------------- RepVGG-A0 on real ImageNet images

@pytest.fixture(scope="module")
def a0(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16_a0")
    write_random_checkpoint(root / "A0.pth", arch="RepVGG-A0", seed=0)
    fused, _ = fuse_model(load_checkpoint(root / "A0.pth").model)
    export_onnx(fused, root / "a0.onnx")
    images, _ = load_eval_batch(shared_data / "imagenet_val_1300", 224, IMAGES)
    (root / "bins").mkdir()
    names = [f"img{i:03d}" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):
        tensors.write_tensor(root / "bins" / f"{name}.bin", image)
    return {"root": root, "fused": fused, "images": images, "names": names}


def _run(a0, out, name, *flags) -> np.ndarray:
    proc = run_script("infer.py", a0["root"] / "a0.onnx", a0["root"] / "bins", out, "--output_dirname", name,
                      "--batch-size", "8", *flags)
    assert proc.returncode == 0, proc.stderr
    return np.stack([np.fromfile(out / name / f"{n}_0.bin", dtype=np.float32) for n in a0["names"]])


def test_preview_is_float16_and_closer_to_the_emulation_than_float32(a0, tmp_path, one_torch_thread):
    preview = _run(a0, tmp_path, "fp16", "--precision_mode", "force_fp16")
    fp32 = _run(a0, tmp_path, "fp32")
    emulation = fp16_emulation(a0["fused"], a0["images"])
    assert is_fp16_value(preview)  # every logit is a float16 value: the output really was rounded
    assert not is_fp16_value(fp32)
    preview_gap = np.abs(preview - emulation).mean()
    fp32_gap = np.abs(fp32 - emulation).mean()
    # Two float16 emulations that differ only in float32 accumulation order diverge too (about 0.4-0.6 of the
    # float32 gap on a random-weights A0); without rounding the ratio would be about 1, with casts folded > 1.
    ratio = preview_gap / fp32_gap
    print(f"mean |preview - emulation| {preview_gap:.4g}, mean |float32 - emulation| {fp32_gap:.4g}, ratio {ratio:.3f}")
    assert ratio < 0.75
    assert np.abs(preview - fp32).mean() > 0.5 * fp32_gap  # the preview is not the float32 run
    summary = json.loads((tmp_path / "fp16_summary.json").read_text())
    assert summary["args"]["backend"] == "onnxruntime-fp16" and "force_fp16" in summary["args"]["backend_device"]


def test_must_keep_origin_dtype_is_plain_float32_and_om_refuses(a0, tmp_path):
    keep = _run(a0, tmp_path, "keep", "--precision-mode", "must_keep_origin_dtype")
    fp32 = _run(a0, tmp_path, "fp32")
    np.testing.assert_array_equal(keep, fp32)
    assert json.loads((tmp_path / "keep_summary.json").read_text())["args"]["backend"] == "onnxruntime"
    om = tmp_path / "m.om"
    om.write_bytes(b"x")
    assert_one_line_error(run_script("infer.py", om, a0["root"] / "bins", tmp_path, "--precision_mode", "force_fp16"),
                          2, "atc_convert.sh")
    assert_one_line_error(run_script("infer.py", a0["root"] / "a0.onnx", a0["root"] / "bins", tmp_path,
                                     "--precision_mode", "fp17"), 2, "force_fp16")
