"""MindSpore checkpoints without MindSpore: real files written by MindSpore 2.10.0 (../shared/data/mindspore_repvgg).

The oracle is MindSpore itself: every small fixture must parse to exactly the arrays its own
`load_checkpoint` returned (`<file>.values.npz`), and the fused ONNX model made from the full A0
must give MindSpore's own logits. Ascend-style (GroupConv2d) and training-style (NetWithLoss,
optimizer state, EMA) A0 checkpoints are built from the real one through `encode_ckpt`, whose
bytes are checked against MindSpore's on the small fixtures first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pth2onnx
from repvgg_model import load_checkpoint
from repvgg_model.export import onnx_session
from repvgg_model.mindspore import (
    CKPT,
    SAFETENSORS,
    MindSporeFormatError,
    encode_ckpt,
    load_mindspore,
    read_entries,
    to_official,
)
from repvgg_pipeline.cli import run_cli
from tests.conftest import assert_one_line_error, run_script

SMALL = ["plain.ckpt", "ascend_style.ckpt", "train_style.ckpt", "crc.ckpt", "dtypes.ckpt", "st.safetensors"]


@pytest.fixture(scope="module")
def ms_data(shared_data) -> Path:
    folder = shared_data / "mindspore_repvgg"
    if not folder.is_dir():
        pytest.skip(f"MindSpore fixtures not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def manifest(ms_data) -> dict:
    return json.loads((ms_data / "manifest.json").read_text())


@pytest.fixture(scope="module")
def gpu_entries(ms_data) -> dict:
    entries, container = read_entries(ms_data / "repvgg_a0_gpu_style.ckpt")
    assert container == CKPT
    return entries


def _convert(ckpt: Path, onnx_path: Path, capsys, *extra: str) -> str:
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main, [str(ckpt), str(onnx_path), "--random-inputs", "2", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _logits(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    session = onnx_session(onnx_path)
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


# --- the reader against MindSpore's own loader -------------------------------------------------------
@pytest.mark.parametrize("name", SMALL)
def test_small_fixture_parses_to_exactly_mindspores_values(ms_data, manifest, name):
    entries, _ = read_entries(ms_data / name)
    listed = manifest[name]["entries"]
    assert sorted(entries) == sorted(e["key"] for e in listed)
    expected = np.load(ms_data / f"{name}.values.npz")
    for item in listed:
        value = entries[item["key"]]
        if item.get("type") == "str":  # append_dict strings: MindSpore returns the str itself
            assert value == item["value"]
            continue
        reference = expected[item["key"]]
        assert value.dtype == reference.dtype, item["key"]
        assert value.shape == reference.shape == tuple(item["shape"]), item["key"]
        assert np.array_equal(value, reference), item["key"]  # bit-exact: no tolerance


def test_file_bytes_match_mindspores_layout(ms_data):
    """Our writer lays out plain.ckpt / crc.ckpt byte for byte as MindSpore did (so the A0 variants below are real)."""
    for name, crc in (("plain.ckpt", False), ("crc.ckpt", True)):
        entries, _ = read_entries(ms_data / name)
        assert encode_ckpt(entries, crc_check=crc) == (ms_data / name).read_bytes(), name


def test_chunked_bfloat16_and_scalars_round_trip(tmp_path):
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    entries = {"w": weights, "h": weights.astype(np.float16), "s": np.array(3.5, np.float32),
               "i": np.array([7], np.int64), "note": "epoch 3"}
    data = encode_ckpt(entries, chunk_bytes=10)  # every tensor split into several chunks with the same tag
    assert data.count(b"\x0a\x01w") > 5
    parsed = (tmp_path / "x.ckpt")
    parsed.write_bytes(data)
    back, _ = read_entries(parsed)
    assert list(back) == list(entries)
    for key, value in entries.items():
        assert back[key] == value if isinstance(value, str) else np.array_equal(back[key], value)
    # bfloat16: numpy has none; the reader widens it to float32 exactly (bfloat16 is float32's upper half)
    bf16 = torch.tensor([1.5, -2.25, 3e-3, 65504.0], dtype=torch.bfloat16)
    raw = bf16.view(torch.int16).numpy().astype("<i2").tobytes()
    from repvgg_model.mindspore import _value_message  # the writer's own Value encoder, with a type numpy lacks

    parsed.write_bytes(_value_message("b", [4], "BFloat16", raw))
    back, _ = read_entries(parsed)
    assert back["b"].dtype == np.float32
    assert np.array_equal(back["b"], bf16.float().numpy())


def test_group_conv2d_concatenation_is_pytorchs_grouped_conv():
    """GroupConv2d splits the input channels, runs convs[i] on part i, concatenates: weights concatenate on dim 0."""
    torch.manual_seed(0)
    groups, cin, cout = 4, 8, 12
    parts = [torch.randn(cout // groups, cin // groups, 3, 3) for _ in range(groups)]
    x = torch.randn(1, cin, 9, 9)
    mindspore_style = torch.cat([torch.nn.functional.conv2d(xi, w, padding=1)
                                 for xi, w in zip(x.split(cin // groups, dim=1), parts, strict=True)], dim=1)
    entries = {f"stage0.rbr_dense.0.convs.{i}.weight": w.numpy() for i, w in enumerate(parts)}
    state = to_official(entries).state_dict
    grouped = torch.from_numpy(state["stage0.rbr_dense.conv.weight"])
    torch.testing.assert_close(torch.nn.functional.conv2d(x, grouped, padding=1, groups=groups), mindspore_style)


# --- the full A0 against MindSpore's logits ---------------------------------------------------------------
def test_a0_gpu_style_onnx_gives_mindspores_logits(ms_data, tmp_path, capsys):
    out = _convert(ms_data / "repvgg_a0_gpu_style.ckpt", tmp_path / "a0.onnx", capsys)
    assert "variant: RepVGG-A0 (recognised from tensor shapes), 1000 classes" in out
    assert "MindSpore .ckpt, model zoo GPU names, 290 network tensors" in out
    reference = np.load(ms_data / "repvgg_a0_mindspore_logits.npy")
    logits = _logits(tmp_path / "a0.onnx", np.load(ms_data / "repvgg_a0_input.npy"))
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()
    assert np.array_equal(logits.argmax(1), reference.argmax(1))


def _ascend_names(entries: dict) -> dict:
    """The model zoo's Ascend branch: conv_bn builds its convs as GroupConv2d (convs.0 when group == 1)."""
    return {k.replace("rbr_dense.0.weight", "rbr_dense.0.convs.0.weight")
            .replace("rbr_1x1.0.weight", "rbr_1x1.0.convs.0.weight"): v for k, v in entries.items()}


def _training_checkpoint(entries: dict) -> dict:
    """What train.py's ModelCheckpoint saves from TrainOneStepWithEMA(NetWithLoss(net)): the real weights as
    EMA copies of the trainable parameters, the live network perturbed, optimizer / loss-scale / append_dict state."""
    trainable = [k for k in entries if not k.endswith(("moving_mean", "moving_variance"))]
    out: dict = {}
    for key, value in entries.items():
        out["model." + key] = value * np.float32(0.9) if key in trainable else value
    out["scale_sense"] = np.array(65536.0, np.float32)
    out["global_step"] = np.array([1250], np.int32)
    out["momentum"] = np.array(0.9, np.float32)
    out.update({f"moments.model.{k}": np.zeros_like(entries[k]) for k in trainable})
    out["learning_rate"] = np.linspace(0.1, 0.0, 10, dtype=np.float32)
    out["current_iterator_step"] = np.array(1250, np.int32)
    out["last_overflow_iterator_step"] = np.array(0, np.int32)
    out.update({f"_ema_weights.model.{k}": entries[k] for k in trainable})
    out["epoch_num"] = np.array(3, np.int64)
    out["step_num"] = np.array(1250, np.int64)
    out["note"] = "RepVGG-A0"
    return out


def test_ascend_and_training_style_a0_convert_to_the_same_numbers(ms_data, gpu_entries, tmp_path, capsys):
    inputs = np.load(ms_data / "repvgg_a0_input.npy")
    _convert(ms_data / "repvgg_a0_gpu_style.ckpt", tmp_path / "gpu.onnx", capsys)
    gpu = _logits(tmp_path / "gpu.onnx", inputs)

    ascend = tmp_path / "ascend.ckpt"
    ascend.write_bytes(encode_ckpt(_ascend_names(gpu_entries), chunk_bytes=1 << 16))  # chunked as well
    out = _convert(ascend, tmp_path / "ascend.onnx", capsys)
    assert "Ascend names (GroupConv2d)" in out
    assert np.array_equal(_logits(tmp_path / "ascend.onnx", inputs), gpu)

    train = tmp_path / "train.ckpt"
    train.write_bytes(encode_ckpt(_training_checkpoint(gpu_entries), crc_check=True))
    out = _convert(train, tmp_path / "ema.onnx", capsys, "--use-ema")
    assert "290 network tensors (EMA weights)" in out
    assert "stripped prefix model." in out
    # everything that is not the network is named and counted, never dropped silently
    for part in ("non-model entries ignored", "moments.* x", "_ema_weights.* x", "global_step", "learning_rate",
                 "scale_sense", "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num",
                 "note"):
        assert part in out, part
    assert np.array_equal(_logits(tmp_path / "ema.onnx", inputs), gpu)

    out = _convert(train, tmp_path / "live.onnx", capsys)  # without --use-ema: the live (perturbed) network
    assert "(EMA weights)" not in out
    assert not np.allclose(_logits(tmp_path / "live.onnx", inputs), gpu, atol=1e-3)


def test_recognised_by_content_not_extension(ms_data, tmp_path):
    renamed = tmp_path / "RepVGG-A0-train.pth"
    shutil.copyfile(ms_data / "repvgg_a0_gpu_style.ckpt", renamed)
    loaded = load_checkpoint(renamed)
    assert loaded.arch == "RepVGG-A0" and loaded.wrapper.startswith(CKPT)
    sft = tmp_path / "weights.bin"
    shutil.copyfile(ms_data / "st.safetensors", sft)
    entries, container = read_entries(sft)
    assert container == SAFETENSORS and len(entries) == 26
    with pytest.raises(MindSporeFormatError, match="not a MindSpore"):
        read_entries(ms_data / "repvgg_a0_input.npy")


# --- refusals: one line, exit 2 -------------------------------------------------------------------------
def _map_tensor_ckpt() -> bytes:
    from repvgg_model.mindspore import _length_delimited

    value = _length_delimited(1, b"embedding.table") + _length_delimited(3, _length_delimited(1, b""))
    return _length_delimited(1, value)


def _damaged(ms_data: Path, case: str) -> bytes:
    if case == "encrypted":  # MindSpore's crypto blocks: magic number (native int32), GCM tag, length, ciphertext
        return (0x7F3A5ED8).to_bytes(4, "little") + bytes(range(256)) * 4
    if case == "map tensor":
        return (ms_data / "plain.ckpt").read_bytes() + _map_tensor_ckpt()
    if case == "truncated":
        return (ms_data / "plain.ckpt").read_bytes()[:3000]
    data = bytearray((ms_data / "crc.ckpt").read_bytes())
    data[1000] ^= 0x01  # one flipped bit inside a weight
    return bytes(data)


@pytest.mark.parametrize(("case", "message"), [("encrypted", "encrypted (AES-GCM"), ("map tensor", "MapTensor"),
                                               ("truncated", "truncated"), ("corrupt crc", "CRC check failed")])
def test_refused_with_one_line(ms_data, tmp_path, capsys, case, message):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_damaged(ms_data, case))
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main, [str(path), str(tmp_path / "x.onnx")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x.onnx").exists()


def test_refusal_from_the_command_line(ms_data, tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_damaged(ms_data, "corrupt crc"))
    assert_one_line_error(run_script("pth2onnx.py", path, tmp_path / "x.onnx"), 2, contains="CRC check failed")


def test_use_ema_without_ema_weights_is_an_error(ms_data):
    with pytest.raises(MindSporeFormatError, match="no EMA weights"):
        load_mindspore(ms_data / "train_style.ckpt", use_ema=True)


def test_deploy_form_checkpoint_with_group_conv_names(ms_data, tmp_path, one_torch_thread):
    """A re-parameterised network saved by MindSpore (`rbr_reparam`, as GroupConv2d `convs.0` on Ascend) loads fused."""
    from repvgg_model import fuse_model

    fused, _ = fuse_model(load_checkpoint(ms_data / "repvgg_a0_gpu_style.ckpt").model)
    entries = {k.replace("rbr_reparam.", "rbr_reparam.convs.0."): v.numpy()
               for k, v in fused.state_dict().items()}
    path = tmp_path / "deploy.ckpt"
    path.write_bytes(encode_ckpt(entries))
    loaded = load_checkpoint(path)
    assert loaded.fused and loaded.arch == "RepVGG-A0"
    reference = np.load(ms_data / "repvgg_a0_mindspore_logits.npy")
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(np.load(ms_data / "repvgg_a0_input.npy"))).numpy()
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()


def test_safetensors_of_another_origin_keeps_its_key_names(ms_data, tmp_path, one_torch_thread):
    """timm publishes safetensors: its key names go through the usual timm handling; bfloat16 is widened."""
    from safetensors.torch import save_file

    from repvgg_model.checkpoint import from_official_keys

    reference = load_checkpoint(ms_data / "repvgg_a0_gpu_style.ckpt").model
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in from_official_keys(state, "timm").items()}, str(path))
    loaded = load_checkpoint(path)
    assert loaded.family == "timm" and loaded.arch == "RepVGG-A0"
    assert loaded.wrapper.startswith("safetensors (format not stated)")
    x = torch.from_numpy(np.load(ms_data / "repvgg_a0_input.npy"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=0, atol=0)
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(path))
    assert load_checkpoint(path).layout == "official-train"
