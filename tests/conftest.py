"""Shared test fixtures: where the real data lives and how to run a step script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
STANDINS = Path(__file__).resolve().parent / "standins"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real ImageNet images); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """torchvision references work on single images: torch's thread pool only adds contention on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_script(script: str, *args: object, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a top-level step script (or any file relative to the repo root) as a user would."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *map(str, args)],
        cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int = 2, contains: str | None = None) -> None:
    """The contract for bad input: exit `code`, exactly one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    if contains is not None:
        assert contains.lower() in lines[0].lower(), lines[0]


def run_atc_standin(onnx: Path, output: Path, batch: int, size: int, aipp: Path | None = None) -> Path:
    """The stand-in atc (tests/standins): `{output}.om`, the ONNX model with its input fixed to batch,3,size,size."""
    args = [sys.executable, str(STANDINS / "atc_standin.py"), "--framework=5", f"--model={onnx}", f"--output={output}",
            "--input_format=NCHW", f"--input_shape=actual_input_1:{batch},3,{size},{size}",
            "--soc_version=Ascend310P3"]
    if aipp is not None:
        args.append(f"--insert_op_conf={aipp}")
    subprocess.run(args, check=True, capture_output=True)
    return output.with_suffix(".om")
