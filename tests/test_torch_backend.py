"""infer.py with a training checkpoint: the PyTorch reference backend, real torch, real checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repvgg_model import load_checkpoint, write_random_checkpoint
from repvgg_model.synthetic import random_state_dict
from repvgg_pipeline.formats import tensors
from tests.conftest import assert_one_line_error, run_script

SIZE = 64
COUNT = 6  # batch 4: two batches, the last padded by 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_backend")
    write_random_checkpoint(root / "A0-train.pth", arch="RepVGG-A0", seed=1)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((COUNT, 3, SIZE, SIZE)).astype(np.float32)
    (root / "bins").mkdir()
    names = [f"img{i}" for i in range(COUNT)]
    for name, image in zip(names, images, strict=True):
        tensors.write_tensor(root / "bins" / f"{name}.bin", image)
    return {"root": root, "images": images, "names": names, "ckpt": root / "A0-train.pth"}


def _dumps(folder, names) -> np.ndarray:
    return np.stack([np.fromfile(folder / f"{n}_0.bin", dtype=np.float32) for n in names])


@torch.no_grad()
def _train_time_logits(checkpoint, images: np.ndarray, **kwargs) -> np.ndarray:
    loaded = load_checkpoint(checkpoint, **kwargs)
    assert not loaded.fused  # the reference is the unfused training model
    return loaded.model.eval()(torch.from_numpy(images)).numpy()


def test_pth_runs_the_train_time_model_and_writes_the_runner_layout(data, tmp_path):
    proc = run_script("infer.py", data["ckpt"], data["root"] / "bins", tmp_path, "--output_dirname", "torch",
                      "--batch-size", "4", "--input-size", str(SIZE), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    got = _dumps(tmp_path / "torch", data["names"])
    want = _train_time_logits(data["ckpt"], data["images"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    summary = json.loads((tmp_path / "torch_summary.json").read_text())
    assert summary["args"]["backend"] == "torch" and summary["args"]["batchsize"] == 4
    assert "train-time" in summary["args"]["backend_device"] and "float32" in summary["args"]["backend_device"]
    assert summary["NPU_compute_time"]["count"] == 2 and summary["H2D_latency"]["count"] == 0
    assert "6 inputs in 2 batches of 4 (2 padding rows)" in proc.stdout.strip().splitlines()[-1]


def test_pth2onnx_export_agrees_with_the_reference(data, tmp_path):
    onnx_path = tmp_path / "a0.onnx"
    export = run_script("pth2onnx.py", data["ckpt"], onnx_path, "--input-size", str(SIZE), "--skip-verify")
    assert export.returncode == 0, export.stderr
    for model, name in ((data["ckpt"], "torch"), (onnx_path, "onnx")):
        proc = run_script("infer.py", model, data["root"] / "bins", tmp_path, "--output_dirname", name,
                          "--batch-size", "4", "--input-size", str(SIZE), "--threads", "1")
        assert proc.returncode == 0, proc.stderr
    torch_logits, onnx_logits = _dumps(tmp_path / "torch", data["names"]), _dumps(tmp_path / "onnx", data["names"])
    assert np.abs(torch_logits - onnx_logits).max() <= 1e-4 * np.abs(torch_logits).max()
    assert (torch_logits.argmax(1) == onnx_logits.argmax(1)).all()


def test_explicit_backend_ema_and_arch(data, tmp_path, one_torch_thread):
    plain = random_state_dict("RepVGG-A0", seed=1)
    # other weights under the EMA key: every conv kernel scaled (BN statistics kept, so still sane)
    ema = {k: v * 0.9 if k.endswith("conv.weight") else v for k, v in plain.items()}
    ckpt = tmp_path / "run.ckpt"  # a suffix that says nothing: --backend torch
    torch.save({"model": plain, "model_ema": ema, "epoch": 3}, ckpt)
    for flags, name in (([], "plain"), (["--use-ema"], "ema")):
        proc = run_script("infer.py", ckpt, data["root"] / "bins", tmp_path, "--output_dirname", name,
                          "--backend", "torch", "--arch", "RepVGG-A0", "--input-size", str(SIZE), "--threads", "1",
                          *flags)
        assert proc.returncode == 0, proc.stderr
    want_plain = _train_time_logits(ckpt, data["images"])
    want_ema = _train_time_logits(ckpt, data["images"], use_ema=True)
    scale = np.abs(want_ema).max()
    np.testing.assert_allclose(_dumps(tmp_path / "plain", data["names"]), want_plain, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(_dumps(tmp_path / "ema", data["names"]), want_ema, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(want_plain - want_ema).max() > 0.1  # the EMA weights really are other weights


def test_bad_input_is_one_line(data, tmp_path):
    bins = data["root"] / "bins"
    assert_one_line_error(run_script("infer.py", data["ckpt"], bins, tmp_path, "--arch", "RepVGG-B1"), 2,
                          "does not fit")
    assert_one_line_error(run_script("infer.py", data["ckpt"], bins, tmp_path, "--input-size", "32"), 2,
                          "expected")  # 64x64 tensors for a 32x32 input: the size check names both
    assert_one_line_error(run_script("infer.py", data["ckpt"], bins, tmp_path, "--precision_mode", "force_fp16"), 2,
                          "float32 reference")
    not_a_checkpoint = tmp_path / "junk.pth"
    not_a_checkpoint.write_bytes(b"not a zip file")
    assert_one_line_error(run_script("infer.py", not_a_checkpoint, bins, tmp_path, "--input-size", str(SIZE)), 2)
    onnx_like = tmp_path / "m.onnx"
    onnx_like.write_bytes(b"x")
    assert_one_line_error(run_script("infer.py", onnx_like, bins, tmp_path, "--use-ema"), 2, "--use-ema")
