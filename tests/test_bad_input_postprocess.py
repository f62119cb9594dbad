"""Issue 9, accuracy side: hostile input to postprocess.py, parse_perf.py and the label file, one test per problem.

Each case ends as the README promises: one line on stderr and the right exit code, nothing
overwritten, nothing silently counted.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repvgg_pipeline.formats import perf
from repvgg_pipeline.formats.dumps import dump_path, write_dump
from repvgg_pipeline.formats.labels import write_labels
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

CLASSES = 1000
STEMS = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 9)]


def make_run(root: Path, logits: np.ndarray, labels: list[int], outfmt: str = "BIN") -> tuple[Path, Path]:
    """Dumps of `logits` (one row per stem) in `root/dumps`, and a label file; returns both paths."""
    dumps = root / "dumps"
    dumps.mkdir(parents=True, exist_ok=True)
    for stem, row in zip(STEMS, logits, strict=False):
        write_dump(dump_path(dumps, stem, 0, outfmt), row[None, :].astype(np.float32))
    label_file = root / "val_label.txt"
    write_labels(label_file, [(f"{s}.JPEG", lab) for s, lab in zip(STEMS, labels, strict=False)])
    return dumps, label_file


def good_logits(labels: list[int]) -> np.ndarray:
    logits = np.zeros((len(labels), CLASSES), np.float32)
    logits[np.arange(len(labels)), labels] = 5.0
    return logits


# ---------------------------------------------------------------- 4: non-finite scores

def test_all_nan_dumps_are_misses_reported_exit_1(tmp_path):
    labels = [996] * len(STEMS)  # NaN ranked last put label 996 first (argpartition on all -inf) -> 100 %
    dumps, label_file = make_run(tmp_path, np.full((len(STEMS), CLASSES), np.nan, np.float32), labels)
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "8 of 8 dumps hold NaN/inf" in proc.stderr
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert metrics["top1"] == 0.0 and metrics["top5"] == 0.0 and metrics["dumps_with_non_finite_values"] == 8


def test_one_nan_row_is_a_miss_the_others_count(tmp_path):
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    logits = good_logits(labels)
    logits[3, 500] = np.nan  # its label still has the best finite score: it must not count
    logits[5, 9] = np.inf
    dumps, label_file = make_run(tmp_path, logits, labels, "NPY")
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json")
    assert proc.returncode == 1 and f"first: {dumps / (STEMS[3] + '_0.npy')}" in proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["top5"] == 6 / 8


# ---------------------------------------------------------------- 8: a class count that is a guess

def test_float16_read_of_float32_dumps_is_an_error_unless_the_count_is_given(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json", "--dtype", "float16")
    assert_one_line_error(proc, 2, "read as float32 they are 1000 values: check --dtype")
    assert not (tmp_path / "r.json").exists()
    told = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json", "--dtype", "float16",
                      "--num-classes", "2000")
    assert told.returncode == 0, told.stderr


# ---------------------------------------------------------------- 10: the odd dump is the one named

@pytest.mark.parametrize("outfmt", ["BIN", "TXT", "NPY"])
def test_truncated_first_dump_is_the_one_named(tmp_path, outfmt):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels, outfmt)
    short = dump_path(dumps, STEMS[0], 0, outfmt)
    write_dump(short, good_logits(labels)[:1, :250])
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json")
    assert_one_line_error(proc, 2, f"{short.name}: ")
    assert "like 7 of the 8 dumps" in proc.stderr


# ---------------------------------------------------------------- 11: label file oddities

def test_label_file_with_a_utf8_bom(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes())
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["top1"] == 1.0


@pytest.mark.parametrize("label", ["²", "--5", "٣", "1" * 40])
def test_label_that_is_not_an_ascii_number_is_one_line(tmp_path, label):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    label_file.write_text(label_file.read_text() + f"ILSVRC2012_val_00000009.JPEG {label}\n", encoding="utf-8")
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "r.json"), 2, "val_label.txt:9")


# ---------------------------------------------------------------- 12: outputs that cannot be written

def test_output_under_a_regular_file_is_one_line(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    (tmp_path / "README.md").write_text("x")
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "README.md" / "q.json"),
                          2, "cannot write")
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "README.md", "q.json"),
                          2, "cannot write")


def limited_file_size(limit: int):
    """preexec_fn: files this process writes may not grow past `limit` bytes (EFBIG, like a full disk)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_with_file_size_limit(limit: int, script: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=limited_file_size(limit))


def test_disk_full_while_writing_the_result_is_one_line(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    proc = run_with_file_size_limit(100, "postprocess.py", dumps, label_file, tmp_path / "r.json")
    assert_one_line_error(proc, 2, "cannot write")
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob(".r.json.tmp-*"))


# ---------------------------------------------------------------- 13: --num-classes below 1

@pytest.mark.parametrize("outfmt", ["NPY", "TXT", "BIN"])
def test_negative_num_classes_is_one_line(tmp_path, outfmt):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels, outfmt)
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "r.json", "--num-classes", "-1"),
                          2, "--num-classes must be at least 1")


# ---------------------------------------------------------------- 14: Ctrl-C while numpy is being imported

INTERRUPT_DURING_IMPORT = """
import runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["postprocess.py", "infer.py", "parse_perf.py", "gen_dataset_info.py"])
def test_ctrl_c_during_the_imports_is_one_line(script):
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORT, str(REPO_ROOT / script), "x", "y"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (130, -2), (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == f"{script}: interrupted", proc.stderr


# ---------------------------------------------------------------- 16: a trailing chip-like word is a chip

@pytest.mark.parametrize(("args", "message"), [
    (("910B",), "unknown chip '910B'"),
    (("Ascend910B4",), "unknown chip 'Ascend910B4'"),
    (("310p",), None),
])
def test_trailing_word_that_looks_like_a_chip_is_a_chip(tmp_path, args, message):
    perf_file = tmp_path / "perf.txt"
    perf.write_benchmark_perf(perf_file, 800.0, 100.0)
    proc = run_script("parse_perf.py", perf_file, *args)
    if message is None:
        assert proc.returncode == 0 and proc.stdout.startswith("310P"), proc.stderr
    else:
        assert_one_line_error(proc, 2, message)


def test_chip_alone_is_not_taken_for_a_missing_file():
    assert_one_line_error(run_script("parse_perf.py", "910B"), 2, "no perf file given")


# ---------------------------------------------------------------- 17: an input is never overwritten

def test_output_that_is_the_label_file_or_a_dump_is_refused(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    before = label_file.read_bytes()
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, label_file), 2, "label file")
    assert label_file.read_bytes() == before
    dump = dump_path(dumps, STEMS[2], 0, "BIN")
    dump_bytes = dump.read_bytes()
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, dump), 2, "is the dump")
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, dumps, dump.name), 2, "is the dump")
    os.symlink(label_file, tmp_path / "link.json")  # through a link too
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "link.json"), 2, "label file")
    assert dump.read_bytes() == dump_bytes and label_file.read_bytes() == before


# ---------------------------------------------------------------- siblings found in the sweep

def test_dangling_dump_symlink_is_named_not_skipped(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    os.symlink(tmp_path / "gone_0.bin", dumps / "ILSVRC2012_val_00000099_0.bin")
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "r.json"), 2,
                          "ILSVRC2012_val_00000099_0.bin")


def test_fifo_dump_is_named_not_read(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    os.mkfifo(dumps / "ILSVRC2012_val_00000099_0.bin")
    proc = run_script("postprocess.py", dumps, label_file, tmp_path / "r.json", timeout=60)
    assert_one_line_error(proc, 2, "not a regular file")


def test_fifo_label_file_is_not_reported_missing(tmp_path):
    labels = list(range(8))
    dumps, _ = make_run(tmp_path, good_logits(labels), labels)
    os.mkfifo(tmp_path / "fifo.txt")
    assert_one_line_error(run_script("postprocess.py", dumps, tmp_path / "fifo.txt", tmp_path / "r.json", timeout=60),
                          2, "not a regular file")


def test_symlink_loop_beside_the_dump_folder_is_passed_over(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path / "run", good_logits(labels), labels)
    os.symlink(tmp_path / "run" / "loop", tmp_path / "run" / "loop")
    proc = run_script("postprocess.py", tmp_path / "run", label_file, tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr


def test_output_named_like_a_dump_in_the_dump_folder_is_refused(tmp_path):
    labels = list(range(8))
    dumps, label_file = make_run(tmp_path, good_logits(labels), labels)
    proc = run_script("postprocess.py", dumps, label_file, dumps / "ILSVRC2012_val_00000042_0.bin")
    assert_one_line_error(proc, 2, "named like a dump")
    assert not (dumps / "ILSVRC2012_val_00000042_0.bin").exists()


def test_complex_npy_dumps_are_refused_not_truncated_with_a_warning(tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for stem in STEMS:
        np.save(dumps / f"{stem}_0.npy", np.zeros(CLASSES, np.complex64))
    _, label_file = make_run(tmp_path / "x", good_logits([1] * 8), [1] * 8)
    assert_one_line_error(run_script("postprocess.py", dumps, label_file, tmp_path / "r.json"), 2, "complex64")


def test_closed_stdout_pipe_is_quiet(tmp_path):
    files = []
    for batch in (1, 4, 8, 16):
        files.append(tmp_path / perf.benchmark_perf_name(batch))
        perf.write_benchmark_perf(files[-1], 800.0 + batch, 100.0)
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "parse_perf.py"), *map(str, files)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the table is printed
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == "", stderr
