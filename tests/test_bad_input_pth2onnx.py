"""pth2onnx.py under hostile input (issue 9): damaged weights, refused files, unwritable outputs, Ctrl-C.

Each case ends in one line on stderr and exit 2 (130 for Ctrl-C), no traceback, no output file.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pth2onnx
from repvgg_model.export import DEFAULT_OPSET
from repvgg_model.synthetic import random_state_dict
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

SMALL = ["--input-size", "32", "--random-inputs", "1"]


@pytest.fixture(scope="module")
def a0_state() -> dict[str, torch.Tensor]:
    return random_state_dict("RepVGG-A0", num_classes=10, seed=0, calibration_size=32)


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" or ".tmp-" in p.name or "probe" in p.name)


@pytest.mark.parametrize(("damage", "named"), [
    ("nan", "stage1.0.rbr_dense.conv.weight"),
    ("inf", "linear.bias"),
    ("negative-var", "stage2.1.rbr_1x1.bn.running_var"),
])
def test_damaged_weights_are_named_exit_2_before_any_agreement(tmp_path, a0_state, damage, named):
    state = {k: v.clone() for k, v in a0_state.items()}
    if damage == "nan":
        state[named][0, 0, 0, 0] = float("nan")
    elif damage == "inf":
        state[named][3] = float("inf")
    else:
        state[named][5] = -0.5
    torch.save(state, tmp_path / "bad.pth")
    proc = run_script("pth2onnx.py", tmp_path / "bad.pth", tmp_path / "out.onnx", *SMALL)
    assert_one_line_error(proc, 2, named)
    assert "agreement" not in proc.stdout
    assert outputs(tmp_path) == []


def test_weights_that_overflow_float32_are_an_error_not_an_agreement(tmp_path, a0_state):
    state = {k: v.clone() for k, v in a0_state.items()}
    state["linear.weight"] *= 1e37  # finite, but the logits overflow to inf
    torch.save(state, tmp_path / "huge.pth")
    proc = run_script("pth2onnx.py", tmp_path / "huge.pth", tmp_path / "out.onnx", *SMALL)
    assert_one_line_error(proc, 2, "non-finite logits")
    assert "agreement" not in proc.stdout and outputs(tmp_path) == []


def test_checkpoint_with_zero_classes(tmp_path, a0_state):
    state = dict(a0_state)
    state["linear.weight"] = torch.zeros(0, a0_state["linear.weight"].shape[1])
    state["linear.bias"] = torch.zeros(0)
    torch.save(state, tmp_path / "zero.pth")
    assert_one_line_error(run_script("pth2onnx.py", tmp_path / "zero.pth", tmp_path / "o.onnx", *SMALL), 2,
                          "0 classes")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1e-4"])
def test_tolerance_must_be_positive_and_finite(tmp_path, value):
    proc = run_script("pth2onnx.py", tmp_path / "missing.pth", tmp_path / "o.onnx", f"--tolerance={value}")
    assert_one_line_error(proc, 2, "--tolerance")


class _RunsCommand:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(("kind", "expected"), [
    ("random-bytes", "neither a torch.save zip archive nor a pickle"),
    ("raw-pickle", "refused: the checkpoint needs arbitrary unpickling of Python objects (posix.system)"),
    ("raw-plain-pickle", "refused: a plain Python pickle"),
    ("zip-pickle", "refused: the checkpoint needs arbitrary unpickling of Python objects (posix.system)"),
])
def test_refusals_say_what_and_why_and_never_advise_disabling_safety(tmp_path, kind, expected):
    source = tmp_path / "input.pth"
    if kind == "random-bytes":
        source.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(4096)))
    elif kind == "raw-pickle":
        source.write_bytes(pickle.dumps({"model": {}, "hook": _RunsCommand()}))
    elif kind == "raw-plain-pickle":
        source.write_bytes(pickle.dumps({"epoch": 3}))
    else:
        torch.save({"model": {}, "hook": _RunsCommand()}, source)
    proc = run_script("pth2onnx.py", source, tmp_path / "out.onnx", cwd=tmp_path)
    assert_one_line_error(proc, 2, expected)
    assert "weights_only" not in proc.stderr and "False" not in proc.stderr
    assert not (tmp_path / "pwned").exists() and outputs(tmp_path) == []


@pytest.fixture(scope="module")
def a0_file(tmp_path_factory, a0_state) -> Path:
    path = tmp_path_factory.mktemp("a0") / "a0.pth"
    torch.save(a0_state, path)
    return path


def test_output_under_a_regular_file(tmp_path, a0_file):
    (tmp_path / "README.md").write_text("a file, not a folder")
    proc = run_script("pth2onnx.py", a0_file, tmp_path / "README.md" / "x.onnx", *SMALL)
    assert_one_line_error(proc, 2, "cannot write")
    assert "checkpoint:" not in proc.stdout  # refused before the work


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder(tmp_path, a0_file):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_one_line_error(run_script("pth2onnx.py", a0_file, folder / "x.onnx", *SMALL), 2, "cannot write")
    finally:
        folder.chmod(0o755)


def _limit_file_size() -> None:
    """A 1 MiB file-size limit with SIGXFSZ ignored: writes past it fail with EFBIG, like a full disk."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_disk_full_while_writing_the_onnx(tmp_path, a0_file):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "pth2onnx.py"), str(a0_file), str(tmp_path / "x.onnx"),
                           *SMALL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_file_size)
    assert_one_line_error(proc, 2, "cannot write")
    assert outputs(tmp_path) == []


def test_ctrl_c_while_torch_imports_is_one_line(tmp_path, a0_file):
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "pth2onnx.py"), str(a0_file), str(tmp_path / "x.onnx")],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # wait until torch's C library is loading
        try:
            if "libtorch" in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # inside `import torch` (or, on a fast machine, just after it)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and err.strip().splitlines() == ["pth2onnx.py: interrupted"], err
    assert outputs(tmp_path) == []


def test_help_needs_no_torch_and_the_default_opset_is_the_exporters():
    assert pth2onnx.DEFAULT_OPSET == DEFAULT_OPSET
    code = "import sys, pth2onnx; pth2onnx.get_args_parser(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--input-size", "100000", "--input-size 100000"),
    ("--random-inputs", "1000000000", "GiB of memory"),
])
def test_huge_sizes_are_refused_before_work(tmp_path, a0_file, option, value, message):
    proc = run_script("pth2onnx.py", a0_file, tmp_path / "x.onnx", option, value)
    assert_one_line_error(proc, 2, message)
    assert "checkpoint:" not in proc.stdout


def test_model_library_does_not_import_the_pipeline():
    code = ("import sys, repvgg_model, repvgg_model.export, repvgg_model.checkpoint, repvgg_model.synthetic; "
            "sys.exit(any(m.startswith('repvgg_pipeline') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


@pytest.mark.parametrize(("damage", "message"), [
    ("zero-width", "match no official RepVGG variant"),
    ("complex", "complex-valued tensors"),
])
def test_odd_tensors_are_one_line(tmp_path, a0_state, damage, message):
    state = dict(a0_state)
    if damage == "zero-width":
        state["stage1.1.rbr_dense.conv.weight"] = torch.zeros(48, 0, 3, 3)
    else:
        state["stage0.rbr_dense.bn.running_var"] = state["stage0.rbr_dense.bn.running_var"].to(torch.complex64)
    torch.save(state, tmp_path / "odd.pth")
    assert_one_line_error(run_script("pth2onnx.py", tmp_path / "odd.pth", tmp_path / "o.onnx", *SMALL), 2, message)
