"""preprocess.py and gen_dataset_info.py jpg under hostile input (issue 9).

FIFOs and symlink loops in the source, tensors of other images in DST, NaN / inf / 0 options,
sizes that cannot fit, names with a newline, unwritable outputs: each ends in one clear line or
an honest warning, never a hang, a traceback or a silently counted file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repvgg_pipeline.formats.failures import printable, read_failures, unprintable
from repvgg_pipeline.formats.labels import read_labels
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

TIMEOUT = 120  # a hang fails the test instead of blocking the suite


def images(shared_data: Path, count: int, start: int = 0) -> list[Path]:
    return sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[start:start + count]


def source(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def bins(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".bin")


def preprocess(*args: object) -> subprocess.CompletedProcess:
    return run_script("preprocess.py", *args, "--workers", "1", timeout=TIMEOUT)


def test_fifo_named_like_an_image_is_skipped_with_a_warning(shared_data, tmp_path):
    src = source(tmp_path / "src", images(shared_data, 2))
    os.mkfifo(src / "x.JPEG")
    proc = preprocess(src, tmp_path / "prep")
    assert proc.returncode == 0, proc.stderr
    assert "x.JPEG: a FIFO, not a regular file; skipped" in proc.stderr and "Traceback" not in proc.stderr
    assert bins(tmp_path / "prep") == sorted(f"{p.stem}.bin" for p in images(shared_data, 2))
    assert "1 entries skipped" in proc.stdout

    info = tmp_path / "jpg.info"
    proc = run_script("gen_dataset_info.py", "jpg", src, info, timeout=TIMEOUT)
    assert proc.returncode == 0 and "FIFO" in proc.stderr, proc.stderr
    assert len(info.read_text().splitlines()) == 2


def test_fifo_only_is_no_images(tmp_path):
    (tmp_path / "src").mkdir()
    os.mkfifo(tmp_path / "src" / "x.JPEG")
    assert_one_line_error(preprocess(tmp_path / "src", tmp_path / "prep"), 2, "no images found")


def test_symlink_loops_in_class_folders_end_with_a_note(shared_data, tmp_path):
    src = tmp_path / "src"
    source(src / "c1", images(shared_data, 2))
    source(src / "c2", images(shared_data, 1, start=2))
    (src / "c1" / "up").symlink_to("..")  # back to the source folder
    (src / "c2" / "self").symlink_to(".")  # to itself
    (src / "loop").symlink_to(".")  # a "class folder" that is the source itself
    proc = preprocess(src, tmp_path / "prep")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("symlink loop") == 3, proc.stderr
    assert len(bins(tmp_path / "prep")) == 3
    labels = read_labels(tmp_path / "prep" / "val_label.txt")
    assert sorted(labels.values()) == [0, 0, 1]  # c1, c2: the loop is no class

    proc = run_script("gen_dataset_info.py", "jpg", src, tmp_path / "jpg.info", timeout=TIMEOUT)
    assert proc.returncode == 0 and "symlink loop" in proc.stderr
    assert len((tmp_path / "jpg.info").read_text().splitlines()) == 3


def test_tensors_of_other_images_in_dst_are_refused_then_removed(shared_data, tmp_path):
    first, second = images(shared_data, 3), images(shared_data, 2, start=3)
    dst = tmp_path / "prep"
    assert preprocess(source(tmp_path / "a", first), dst).returncode == 0
    proc = preprocess(source(tmp_path / "b", second), dst)
    assert_one_line_error(proc, 2, "3 .bin tensors of images that are not in SRC")
    assert "--remove-stale" in proc.stderr and len(bins(dst)) == 3  # nothing done

    proc = preprocess(tmp_path / "b", dst, "--keep-stale")
    assert proc.returncode == 0 and "3 tensors of images not in SRC kept" in proc.stdout
    assert len(bins(dst)) == 5

    proc = preprocess(tmp_path / "b", dst, "--remove-stale")
    assert proc.returncode == 0 and "3 tensors of images not in SRC removed" in proc.stdout, proc.stderr
    assert bins(dst) == sorted(f"{p.stem}.bin" for p in second)


def test_remove_stale_never_deletes_files_it_did_not_write(shared_data, tmp_path):
    dst = tmp_path / "prep"
    dst.mkdir()
    (dst / "mine.bin").write_bytes(b"\0" * (3 * 224 * 224 * 4))  # right size, but no settings marker
    proc = preprocess(source(tmp_path / "src", images(shared_data, 1)), dst, "--remove-stale")
    assert_one_line_error(proc, 2, "not written by preprocess.py")
    assert (dst / "mine.bin").exists()

    dst2 = tmp_path / "prep2"
    assert preprocess(tmp_path / "src", dst2).returncode == 0
    (dst2 / "odd.bin").write_bytes(b"12345")  # a marker, but not a tensor of its settings
    assert_one_line_error(preprocess(tmp_path / "src", dst2, "--remove-stale"), 2, "odd.bin")
    assert (dst2 / "odd.bin").exists()


@pytest.mark.parametrize("option", [
    ["--std", "nan", "1", "1"], ["--std", "1", "inf", "1"], ["--std", "0", "1", "1"], ["--std", "1", "1", "-0.2"],
    ["--mean", "nan", "0", "0"], ["--mean", "0", "inf", "0"], ["--std", "1e-45", "1", "1"],
])
def test_non_finite_or_zero_normalisation_is_refused(tmp_path, shared_data, option):
    proc = preprocess(source(tmp_path / "src", images(shared_data, 1)), tmp_path / "prep", *option)
    assert_one_line_error(proc, 2, option[0])
    assert not (tmp_path / "prep").exists()


@pytest.mark.parametrize("option", [["--crop", "60000"], ["--resize", "10000000"]])
def test_sizes_that_cannot_fit_are_refused_before_work(tmp_path, shared_data, option):
    proc = run_script("preprocess.py", source(tmp_path / "src", images(shared_data, 2)), tmp_path / "prep", *option,
                      timeout=TIMEOUT)
    assert_one_line_error(proc, 2, "GiB of memory")
    assert not (tmp_path / "prep").exists()


def test_names_with_a_newline_stay_one_record(shared_data, tmp_path):
    src = tmp_path / "src"
    source(src, images(shared_data, 1))
    (src / "bad\nname.JPEG").write_text("not an image")
    (src / "good\nname.JPEG").symlink_to(images(shared_data, 1, start=1)[0].resolve())
    (src / "back\\slash.JPEG").write_text("not an image either")
    proc = preprocess(src, tmp_path / "prep")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = (tmp_path / "prep" / "failed.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(line.count("\t") == 1 for line in lines), lines
    records = read_failures(tmp_path / "prep" / "failed.txt")
    assert sorted(name for name, _ in records) == ["back\\slash.JPEG", "bad\nname.JPEG", "good\nname.JPEG"]
    assert "control character" in dict(records)["good\nname.JPEG"]
    assert "bad\\nname.JPEG" in proc.stderr and all("name.JPEG" not in line[:4] for line in proc.stderr.splitlines())
    assert len(bins(tmp_path / "prep")) == 1  # the newline name got no tensor that val_label.txt could not name

    proc = run_script("gen_dataset_info.py", "jpg", src, tmp_path / "jpg.info", timeout=TIMEOUT)
    assert proc.returncode == 1 and len((tmp_path / "jpg.info").read_text().splitlines()) == 1


def test_escaping_round_trips():
    for name in ["plain.JPEG", "a\nb", "tab\there", "c:\\x41", "\udcff.jpg", "bell\x07", "nel\x85", "é ü"]:
        assert "\n" not in printable(name) and "\t" not in printable(name)
        assert unprintable(printable(name)) == name


def test_gen_dataset_info_jpg_outputs_that_cannot_be_written(shared_data, tmp_path):
    src = source(tmp_path / "src", images(shared_data, 3))
    (tmp_path / "README.md").write_text("a file")
    assert_one_line_error(run_script("gen_dataset_info.py", "jpg", src, tmp_path / "README.md" / "x.info"),
                          2, "cannot write")
    first = images(shared_data, 1)[0].name
    proc = run_script("gen_dataset_info.py", "jpg", src, src / first)
    assert_one_line_error(proc, 2, "would destroy it")
    assert (src / first).is_symlink()


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))  # writes past 100 bytes fail with EFBIG, like a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_gen_dataset_info_jpg_disk_full(shared_data, tmp_path):
    src = source(tmp_path / "src", images(shared_data, 5))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "gen_dataset_info.py"), "jpg", str(src),
                           str(tmp_path / "x.info")], capture_output=True, text=True, timeout=TIMEOUT,
                          preexec_fn=_limit_file_size)
    assert_one_line_error(proc, 2, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_dst_inside_a_class_folder_is_not_read_as_images(shared_data, tmp_path):
    src = tmp_path / "src"
    source(src / "c1", images(shared_data, 2))
    dst = src / "c1" / "prep"
    assert preprocess(src, dst).returncode == 0
    proc = preprocess(src, dst)
    assert proc.returncode == 0 and "2 skipped" in proc.stdout and "ignored" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("in_the_way", ["val_label.txt", ".preprocess-settings.json", "failed.txt"])
def test_a_folder_where_a_small_output_goes_is_one_line(shared_data, tmp_path, in_the_way):
    src = tmp_path / "src"
    source(src / "c1", images(shared_data, 1))
    (src / "c1" / "broken.JPEG").write_text("not an image")  # so that failed.txt is written
    (tmp_path / "prep" / in_the_way).mkdir(parents=True)
    proc = preprocess(src, tmp_path / "prep")
    if in_the_way == "failed.txt":  # found at the end: the unreadable image was reported first
        proc.stderr = proc.stderr.splitlines()[-1]
    assert_one_line_error(proc, 2, f"cannot write {tmp_path / 'prep' / in_the_way}")


def test_dst_that_is_a_fifo_or_a_file(shared_data, tmp_path):
    src = source(tmp_path / "src", images(shared_data, 1))
    os.mkfifo(tmp_path / "fifo")
    assert_one_line_error(preprocess(src, tmp_path / "fifo"), 2, "not a folder")
    assert_one_line_error(preprocess(src, src / images(shared_data, 1)[0].name), 2, "not a folder")


def test_images_between_pillows_bomb_limits_are_processed_quietly(tmp_path):
    from PIL import Image

    (tmp_path / "src").mkdir()
    Image.new("1", (10000, 9500)).save(tmp_path / "src" / "big.png")  # 95 M pixels: Pillow warns (2 lines)
    proc = preprocess(tmp_path / "src", tmp_path / "prep")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_overwrite_of_an_image_that_became_unreadable_leaves_no_old_tensor(shared_data, tmp_path):
    src = tmp_path / "src"
    source(src, images(shared_data, 1))
    (src / "later_broken.JPEG").write_bytes(images(shared_data, 1, start=1)[0].read_bytes())
    dst = tmp_path / "prep"
    assert preprocess(src, dst).returncode == 0 and len(bins(dst)) == 2
    (src / "later_broken.JPEG").write_text("no longer an image")
    proc = preprocess(src, dst, "--overwrite")
    assert proc.returncode == 1 and "later_broken.JPEG" in proc.stderr
    assert bins(dst) == [f"{images(shared_data, 1)[0].stem}.bin"]  # not scored with the old picture's tensor
