"""pth2onnx.py end to end: the ModelZoo command line on A0, the ONNX contract, options, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import pth2onnx
from repvgg_model import load_checkpoint, write_random_checkpoint
from repvgg_model.export import INPUT_NAME, OUTPUT_NAME, onnx_session
from repvgg_pipeline.atomic import is_temporary
from repvgg_pipeline.cli import run_cli
from tests.conftest import assert_one_line_error, run_script

FUSED_OPS = {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"}


@pytest.fixture(scope="module")
def a0_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "RepVGG-A0-train.pth"
    write_random_checkpoint(path, "RepVGG-A0", seed=0)
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_temporary(p) or p.suffix == ".onnx"]


def test_modelzoo_command_line_on_a0(tmp_path, a0_checkpoint, shared_data):
    out = tmp_path / "repvgg.onnx"
    proc = run_script("pth2onnx.py", a0_checkpoint, out, "--verify-images", shared_data / "imagenet_val_fullsize20",
                      "--verify-count", 8)
    assert proc.returncode == 0, proc.stderr
    report = proc.stdout
    for expected in ("variant: RepVGG-A0 (recognised from tensor shapes), 1000 classes",
                     "format: official-train keys", "official release: no", "22 blocks fused", "opset 11",
                     "8 images from", "top-1 agreement PyTorch vs ONNX Runtime 8/8 (100.0%)",
                     "ATC check: all ops in the ATC list"):
        assert expected in report, report
    assert report.count(": OK;") == 2

    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert proto.opset_import[0].version == 11
    assert {n.op_type for n in proto.graph.node} == FUSED_OPS
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "-1" and not batch_dim.HasField("dim_value")

    # Dynamic batch really works, and the outputs are the train-time model's raw logits.
    reference = load_checkpoint(a0_checkpoint).model
    session = onnx_session(out)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        with torch.no_grad():
            want = reference(x).numpy()
        assert got.shape == (batch, 1000)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert leftovers(tmp_path) == ["repvgg.onnx"]


def test_static_batch_small_input_no_fuse(tmp_path, a0_checkpoint, capsys):
    out = tmp_path / "sub" / "nofuse.onnx"
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main,
                   [str(a0_checkpoint), str(out), "--no-fuse", "--batch-size", "2", "--input-size", "64",
                    "--random-inputs", "3"])
    report = capsys.readouterr().out
    assert code == 0 and "fusion: skipped (--no-fuse)" in report and "top-1 agreement" in report
    proto = onnx.load(str(out))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 64]
    ops = {n.op_type for n in proto.graph.node}
    assert {"Add", "BatchNormalization"} <= ops  # the train-time branches are really there


def test_opset_and_skip_verify(tmp_path, a0_checkpoint, capsys):
    out = tmp_path / "o13.onnx"
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main,
                   [str(a0_checkpoint), str(out), "--opset", "13", "--skip-verify", "--input-size", "64"])
    report = capsys.readouterr().out
    assert code == 0 and "verify: skipped" in report
    assert onnx.load(str(out)).opset_import[0].version == 13


def test_already_fused_checkpoint(tmp_path, capsys):
    path = tmp_path / "fused.pth"
    write_random_checkpoint(path, "RepVGG-A0", num_classes=5, seed=1, layout="official-fused")
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main, [str(path), str(tmp_path / "f.onnx"), "--input-size", "64"])
    report = capsys.readouterr().out
    assert code == 0 and "already fused" in report and "format: official-fused" in report and "5 classes" in report


def test_failed_verification_leaves_no_onnx(tmp_path, a0_checkpoint, capsys):
    code = run_cli(pth2onnx.get_args_parser, pth2onnx.main,
                   [str(a0_checkpoint), str(tmp_path / "x.onnx"), "--tolerance", "1e-15", "--input-size", "64"])
    err = capsys.readouterr().err
    assert code == 1 and "verification failed, no ONNX written" in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such file"),
    ("truncated", "truncated or corrupt"),
    ("unsafe", "refused: the checkpoint needs arbitrary unpickling of Python objects (posix.system)"),
    ("wrong-arch", "does not fit RepVGG-B0"),
    ("unknown-layout", "unknown key layout"),
    ("not-a-checkpoint", "not a readable PyTorch checkpoint"),
])
def test_bad_input_one_line_exit_2_no_partial_output(tmp_path, a0_checkpoint, case, message):
    source = tmp_path / "input.pth"
    extra: list[str] = []
    if case == "truncated":
        data = a0_checkpoint.read_bytes()
        source.write_bytes(data[: len(data) * 2 // 3])
    elif case == "unsafe":
        torch.save({"model": {}, "hook": _RunsCommand()}, source)
    elif case == "wrong-arch":
        source = a0_checkpoint
        extra = ["--arch", "RepVGG-B0"]
    elif case == "unknown-layout":
        torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}, source)
    elif case == "not-a-checkpoint":
        source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    proc = run_script("pth2onnx.py", source, tmp_path / "out.onnx", *extra, cwd=tmp_path)
    assert_one_line_error(proc, 2, message)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "pwned").exists()


class _RunsCommand:
    """Pickles to a call of os.system("touch pwned"): loading it unsafely would create the file."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))



def test_bad_options(tmp_path, a0_checkpoint, capsys):
    for argv, message in (
        ([str(a0_checkpoint), str(tmp_path)], "is a folder"),
        ([str(a0_checkpoint), str(tmp_path / "a.onnx"), "--verify-images", str(tmp_path / "nope")], "not a folder"),
        ([str(a0_checkpoint), str(tmp_path / "a.onnx"), "--arch", "Z9"], "unknown RepVGG variant"),
        ([str(a0_checkpoint), str(tmp_path / "a.onnx"), "--opset", "3", "--input-size", "64"], "--opset 3"),
        ([str(a0_checkpoint), str(tmp_path / "a.onnx"), "--use-ema"], "no EMA weights"),
    ):
        assert run_cli(pth2onnx.get_args_parser, pth2onnx.main, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert leftovers(tmp_path) == []
