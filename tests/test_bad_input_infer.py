"""Issue 9, inference side: hostile input to infer.py and gen_dataset_info.py bin, one test per problem.

A tool never deletes a file it did not write, never drops an input without a word, and ends
every bad input with one line and exit 2.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.info import InfoEntry, write_info
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

SIZE = 32
CLASSES = 10
# ImageNet-style names: `n01440764_10026.bin` is also `{stem}_{index}.bin`, the name of a dump
NAMES = [f"n01440764_{10026 + i}" for i in range(4)]
MANIFEST = ".infer_dumps.json"  # guards.MANIFEST_NAME


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_infer")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, CLASSES)).eval()
    path = root / "dynamic.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE), str(path), input_names=["actual_input_1"],
                      output_names=["output1"], opset_version=11, dynamo=False,
                      dynamic_axes={"actual_input_1": {0: "-1"}, "output1": {0: "-1"}})
    return path


def make_inputs(folder: Path, names: list[str] = NAMES) -> dict[str, str]:
    """Float32 3xSIZExSIZE tensors; returns {file name: sha256} to prove later they are untouched."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        tensors.write_tensor(folder / f"{name}.bin", rng.standard_normal((3, SIZE, SIZE), dtype=np.float32))
    return fingerprint(folder)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- 1: the dump folder is the input folder

def test_dump_folder_that_is_the_input_folder_is_refused_and_nothing_deleted(model, tmp_path):
    before = make_inputs(tmp_path / "w" / "prep")
    proc = run_script("infer.py", model, tmp_path / "w" / "prep", tmp_path / "w", "--output_dirname", "prep")
    assert_one_line_error(proc, 2, "is the input")
    assert fingerprint(tmp_path / "w" / "prep") == before


def test_dump_folder_holding_the_files_of_an_info_file_is_refused(model, tmp_path):
    before = make_inputs(tmp_path / "w" / "prep")
    info = tmp_path / "prep.info"
    write_info(info, [InfoEntry(i, str(tmp_path / "w" / "prep" / f"{n}.bin"), SIZE, SIZE) for i, n in enumerate(NAMES)])
    proc = run_script("infer.py", model, info, tmp_path, "--output_dirname", "w", "--resume")  # a parent, too
    assert_one_line_error(proc, 2, "contains the input")
    assert fingerprint(tmp_path / "w" / "prep") == before


def test_files_infer_did_not_write_are_never_deleted(model, tmp_path):
    make_inputs(tmp_path / "prep")
    out = tmp_path / "out" / "bs4"
    out.mkdir(parents=True)
    theirs = out / "n01440764_99999_0.bin"  # e.g. the dumps of an earlier ais_bench run
    theirs.write_bytes(b"theirs")
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--output_dirname", "bs4")
    assert_one_line_error(proc, 2, "did not write (first: n01440764_99999_0.bin)")
    assert theirs.read_bytes() == b"theirs"
    theirs.unlink()
    assert run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--output_dirname", "bs4").returncode == 0
    ours = sorted(p.name for p in out.glob("*.bin"))
    assert ours == [f"{n}_0.bin" for n in NAMES]
    # a forged manifest entry for a file that is not a dump name is ignored: only dump names are ever removed
    (out / "notes.txt").write_text("keep me")
    (out / MANIFEST).write_text('{"dumps": ["notes.txt", "../prep/n01440764_10026.bin"]}')
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--output_dirname", "bs4")
    assert_one_line_error(proc, 2, "did not write")  # its own dumps are no longer listed: kept, run refused
    assert (out / "notes.txt").read_text() == "keep me" and (tmp_path / "prep" / f"{NAMES[0]}.bin").exists()


def test_a_manifest_that_is_not_a_file_is_refused_not_replaced(model, tmp_path):
    make_inputs(tmp_path / "prep")
    out = tmp_path / "out" / "r"
    out.mkdir(parents=True)
    os.mkfifo(out / MANIFEST)
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--output_dirname", "r", timeout=120)
    assert_one_line_error(proc, 2, "not a regular file")
    assert (out / MANIFEST).is_fifo()


# ---------------------------------------------------------------- 6: dangling symlinks are named

@pytest.mark.parametrize("kind", ["dangling", "loop", "fifo"])
def test_bin_entry_that_is_not_a_file_is_named(model, tmp_path, kind):
    make_inputs(tmp_path / "prep")
    odd = tmp_path / "prep" / "odd.bin"
    if kind == "dangling":
        os.symlink(tmp_path / "gone.bin", odd)
    elif kind == "loop":
        os.symlink(odd, odd)
    else:
        os.mkfifo(odd)
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", timeout=120)
    assert_one_line_error(proc, 2, "odd.bin is not a regular file")
    proc = run_script("gen_dataset_info.py", "bin", tmp_path / "prep", tmp_path / "p.info", SIZE, SIZE, timeout=120)
    assert_one_line_error(proc, 2, "odd.bin is not a regular file")


# ---------------------------------------------------------------- 12: unwritable outputs

def test_output_under_a_regular_file_is_one_line(model, tmp_path):
    make_inputs(tmp_path / "prep")
    (tmp_path / "README.md").write_text("x")
    assert_one_line_error(run_script("infer.py", model, tmp_path / "prep", tmp_path / "README.md" / "out"), 2,
                          "cannot create output folder")


def test_disk_full_while_writing_dumps_is_one_line(model, tmp_path):
    make_inputs(tmp_path / "prep")

    def limit() -> None:  # files may not grow past 20 bytes: like a full disk at the first dump (40 bytes)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))

    out = tmp_path / "out"
    out.mkdir()
    # the manifest is written before the dumps; give it room by writing it once without the limit
    assert run_script("infer.py", model, tmp_path / "prep", out, "--output_dirname", "r").returncode == 0
    (out / "r" / MANIFEST).write_text('{"dumps": []}')  # tiny, so only the dumps exceed the limit
    for dump in (out / "r").glob("*.bin"):
        dump.unlink()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), str(model), str(tmp_path / "prep"), str(out),
                           "--output_dirname", "r"], capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert_one_line_error(proc, 2, "cannot write")


# ---------------------------------------------------------------- 13: batch sizes far from the input count

def test_batch_larger_than_the_inputs_is_not_padded(model, tmp_path):
    make_inputs(tmp_path / "prep")
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--batch-size", "2000")
    assert proc.returncode == 0, proc.stderr
    assert "4 inputs in 1 batches of 4;" in proc.stdout and "padding" not in proc.stdout
    assert "--batch-size 2000 is more than the 4 inputs" in proc.stderr


def test_batch_that_cannot_fit_in_memory_is_refused_before_allocating(model):
    proc = run_script("infer.py", model, "--loop", "2", "--batch-size", "100000000")
    assert_one_line_error(proc, 2, "give a smaller --batch-size")


def test_memory_check_counts_the_batch_buffers():
    from repvgg_pipeline import guards

    assert guards.MANIFEST_NAME == MANIFEST
    guards.check_batch_memory(16, 602112, available=10**9)
    with pytest.raises(UserError, match="needs at least 1.7 GiB"):
        guards.check_batch_memory(1000, 602112, available=10**9)


# ---------------------------------------------------------------- siblings: gen_dataset_info bin over an input

def test_info_file_that_is_an_input_tensor_is_refused(tmp_path):
    before = make_inputs(tmp_path / "prep")
    target = tmp_path / "prep" / f"{NAMES[1]}.bin"
    proc = run_script("gen_dataset_info.py", "bin", tmp_path / "prep", target, SIZE, SIZE)
    assert_one_line_error(proc, 2, "refusing to overwrite an input")
    assert fingerprint(tmp_path / "prep") == before


def test_stale_summary_of_an_earlier_run_is_removed_a_foreign_one_kept(model, tmp_path):
    make_inputs(tmp_path / "prep")
    out = tmp_path / "out"
    args = [str(REPO_ROOT / "infer.py"), str(model), str(tmp_path / "prep"), str(out), "--output_dirname", "r"]
    assert subprocess.run([sys.executable, *args], capture_output=True, timeout=300).returncode == 0

    def limit() -> None:  # the rerun fails at its first write, after the old dumps were removed
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))

    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert_one_line_error(proc, 2, "cannot write")
    # no summary left describing dumps that are gone (parse_perf would report the old run as this one)
    assert not (out / "r_summary.json").exists() and not list((out / "r").glob("*.bin"))
    # ais_bench's own summary (argv list) for this folder name is someone else's: not replaced
    (out / "r_summary.json").write_text('{"args": ["ais_bench", "--model", "m.om"], "throughput": 5}')
    assert_one_line_error(subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300), 2,
                          "was not written by infer.py")
    assert "ais_bench" in (out / "r_summary.json").read_text()


def test_bad_values_and_odd_inputs_are_one_line(model, tmp_path):
    make_inputs(tmp_path / "prep")
    assert_one_line_error(run_script("infer.py", model, "--loop", "2", "--seed", "-1"), 2, "--seed")
    os.mkfifo(tmp_path / "fifo")
    assert_one_line_error(run_script("infer.py", model, tmp_path / "fifo", tmp_path / "out", timeout=60), 2,
                          "neither a folder nor a regular file")
    (tmp_path / "out" / "r_summary.json").mkdir(parents=True)
    proc = run_script("infer.py", model, tmp_path / "prep", tmp_path / "out", "--output_dirname", "r")
    assert_one_line_error(proc, 2, "it is a folder")
    assert not (tmp_path / "out" / "r").exists()  # found before any work


def test_gen_dataset_info_names_the_odd_layout_not_the_file_after_it(tmp_path):
    make_inputs(tmp_path / "prep", ["b1", "b2", "b3"])
    rng = np.random.default_rng(1)
    tensors.write_tensor(tmp_path / "prep" / "a0.bin", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    proc = run_script("gen_dataset_info.py", "bin", tmp_path / "prep", tmp_path / "p.info", SIZE, SIZE)
    assert_one_line_error(proc, 2, "a0.bin is uint8 but 3 of the 4 files are float32")


def test_info_output_that_is_a_symlink_loop_is_no_traceback(tmp_path):
    make_inputs(tmp_path / "prep")
    os.symlink(tmp_path / "loop.info", tmp_path / "loop.info")
    proc = run_script("gen_dataset_info.py", "bin", tmp_path / "prep", tmp_path / "loop.info", SIZE, SIZE)
    # refused in one line (atomic writes never replace what is not a regular file), the link left as it was
    assert_one_line_error(proc, 2, "not a regular file")
    assert (tmp_path / "loop.info").is_symlink()
