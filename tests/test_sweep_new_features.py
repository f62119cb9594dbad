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


# ---------------------------------------------------------------- report.py

def _workdir(root: Path) -> Path:
    """The least a report reads: one run's summary (infer.py's) and its result.json (postprocess.py's)."""
    from repvgg_pipeline.accuracy import Accuracy
    from repvgg_pipeline.formats import result, summary

    (root / "result").mkdir(parents=True)
    record = summary.build_summary({}, {"backend": "onnxruntime", "model": "m.onnx"}, [2.0, 3.0], [], [], 16)
    summary.write_summary(root / "result" / "bs16_summary.json", record)
    result.write_result(root / "result_bs16.json", result.build_result(Accuracy(20, 1000, [0.5, 0.75], 0.5, 10, 0)))
    return root


def test_report_workdir_fixture_reports(tmp_path):
    work = _workdir(tmp_path / "w")
    proc = run_script("report.py", work)
    assert proc.returncode == 0, proc.stderr
    assert "50.00%" in proc.stdout and (work / "report.html").is_file()


def test_report_batch_agreement_missing_counts_is_one_line(tmp_path):
    """A batch_agreement.json whose comparison lacks its counts gave a KeyError traceback, exit 1."""
    work = _workdir(tmp_path / "w")
    (work / "batch_agreement.json").write_text('[{"reference": "bs16", "comparisons": [{"name": "bs1"}]}]')
    assert_one_line_error(run_script("report.py", work), 2, "batch_agreement.json")


def test_report_refuses_a_nan_accuracy_in_result_json(tmp_path):
    """`"top1": NaN` in result.json (json reads it) was shown as `nan%`, exit 0."""
    work = _workdir(tmp_path / "w")
    path = work / "result_bs16.json"
    path.write_text(path.read_text().replace('"top1": 0.5', '"top1": NaN'))
    assert_one_line_error(run_script("report.py", work), 2, "top1 is nan")


@pytest.mark.parametrize("kind", ["fifo", "symlink_loop"])
def test_outputs_never_replace_a_fifo_or_a_symlink_loop(tmp_path, kind):
    """The atomic rename replaced a FIFO or a looping symlink named report.html (not ours) with the report."""
    work = _workdir(tmp_path / "w")
    target = work / "report.html"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("loop", target)
        os.symlink("report.html", work / "loop")
    proc = run_script("report.py", work, timeout=60)
    assert_one_line_error(proc, 2, "not a regular file")
    assert not target.is_file() and os.path.lexists(target)


# ---------------------------------------------------------------- infer.py streaming

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A random-weight RepVGG-A0 exported by pth2onnx.py (the model the streaming tests feed)."""
    from repvgg_model import write_random_checkpoint

    root = tmp_path_factory.mktemp("model")
    write_random_checkpoint(root / "a0.pth", arch="RepVGG-A0")
    proc = run_script("pth2onnx.py", root / "a0.pth", root / "a0.onnx")
    assert proc.returncode == 0, proc.stderr
    return root / "a0.onnx"


def test_stream_names_what_it_skips_and_fails_unusable_names(tiny_onnx, tmp_path):
    """Streaming dropped a FIFO named x.JPEG and an image whose name holds a newline without a word (exit 0);
    preprocess.py warns about the first and lists the second in failed.txt."""
    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_val_fullsize20"
    if not source.is_dir():
        source = Path("/work/shared/data/imagenet_val_fullsize20")
    images = tmp_path / "images"
    images.mkdir()
    good = sorted(source.glob("*.JPEG"))[:2]
    for path in good:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "bad\nname.JPEG").write_bytes(good[0].read_bytes())
    os.mkfifo(images / "x.JPEG")
    proc = run_script("infer.py", tiny_onnx, images, tmp_path / "out", "--output_dirname", "d", timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "x.JPEG: a FIFO" in proc.stderr and "bad\\nname.JPEG" in proc.stderr
    assert "2 inputs" in proc.stderr or "2 inputs" in proc.stdout
    assert "bad\\nname.JPEG" in (tmp_path / "out" / "failed.txt").read_text()
    assert len(list((tmp_path / "out" / "d").glob("*_0.bin"))) == 2


def test_report_sweep_json_never_replaces_a_run_summary(two_runs, tmp_path):
    """`python -m repvgg_pipeline.report_sweep --json` onto a run summary overwrote it (data lost)."""
    import subprocess
    import sys

    ref, other = two_runs
    target = tmp_path / "bs1_summary.json"
    target.write_text('{"args": {"backend": "onnxruntime"}}')
    proc = subprocess.run([sys.executable, "-m", "repvgg_pipeline.report_sweep", "--json", str(target), "--backend",
                           "onnxruntime", f"bs1={ref}", f"bs16={other}"], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert_one_line_error(proc, 2, "not a batch agreement file")
    assert target.read_text() == '{"args": {"backend": "onnxruntime"}}'
