"""Hostile bad-input sweep of compare.py, report.py, infer.py's torch/FP16/streaming options and the MindSpore
readers: one test per problem the sweep found (each failed before its fix)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_script

CLASSES = 10


def _dumps(folder: Path, seed: int, images: int = 4) -> Path:
    """A dump folder in infer.py's layout: {stem}_0.bin, float32 logits."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(images):
        rng.standard_normal(CLASSES).astype(np.float32).tofile(folder / f"img_{i:04d}_0.bin")
    return folder


@pytest.fixture
def two_runs(tmp_path):
    return _dumps(tmp_path / "ref", 0), _dumps(tmp_path / "other", 1)


# ---------------------------------------------------------------- compare.py

@pytest.mark.parametrize("kind", ["dump", "summary", "fifo", "symlink_loop"])
def test_compare_json_never_replaces_a_file_it_did_not_write(two_runs, tmp_path, kind):
    """--json onto a dump of OTHER, a run summary beside it, a FIFO or a symlink loop replaced it (data lost)."""
    ref, other = two_runs
    if kind == "dump":
        target = other / "img_0000_0.bin"
    elif kind == "summary":
        target = tmp_path / "other_summary.json"
        target.write_text('{"args": {"backend": "onnxruntime"}}')
    elif kind == "fifo":
        target = tmp_path / "x.json"
        os.mkfifo(target)
    else:
        target = tmp_path / "loop.json"
        os.symlink("loop2", target)
        os.symlink("loop.json", tmp_path / "loop2")
    before = os.lstat(target)
    proc = run_script("compare.py", ref, other, "--json", target, timeout=60)
    assert_one_line_error(proc, 2, "not a comparison compare.py wrote")
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode, before.st_size)
    # its own earlier output is still replaced on a rerun
    out = tmp_path / "drift.json"
    assert run_script("compare.py", ref, other, "--json", out).returncode == 0
    assert run_script("compare.py", ref, other, "--json", out).returncode == 0
    assert json.loads(out.read_text())["reference"] == "ref"


def test_compare_refuses_a_run_compared_with_itself(two_runs):
    """REF given again as OTHER (here `ref/`) reported 100 % agreement, exit 0: a meaningless pass for a CI gate."""
    ref, other = two_runs
    proc = run_script("compare.py", ref, other, f"{ref}{os.sep}")
    assert_one_line_error(proc, 2, "same dumps")
