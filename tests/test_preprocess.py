"""preprocess.py end to end, run as a user runs it: exact outputs, layouts, resume, failures, errors."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repvgg_pipeline import atomic
from repvgg_pipeline.formats.labels import read_labels
from repvgg_pipeline.formats.tensors import read_tensor
from repvgg_pipeline.transforms import EvalTransform
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

FLOAT_BYTES = 3 * 224 * 224 * 4
UINT8_BYTES = 224 * 224 * 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


DEFAULT = EvalTransform()


def torchvision_tensor(path: Path, transform: EvalTransform = DEFAULT) -> np.ndarray:
    with open(path, "rb") as f:
        return transform.torchvision()(Image.open(f).convert("RGB")).numpy()


def bins(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".bin")


def link_images(files: list[Path], folder: Path) -> Path:
    """A source folder holding exactly `files` (symlinks keep the test cheap)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    return folder


@pytest.fixture(scope="module")
def val1300_run(shared_data, tmp_path_factory):
    """The whole 1,300-image val subset through preprocess.py with 2 workers (shared by several tests)."""
    src = shared_data / "imagenet_val_1300"
    dst = tmp_path_factory.mktemp("val1300") / "prep"
    proc = run_script("preprocess.py", src, dst, "--workers", "2")
    yield src, dst, proc
    shutil.rmtree(dst, ignore_errors=True)  # 780 MB of tensors: do not keep them in pytest's last-3-runs folders


def test_val1300_every_tensor_bit_exact(val1300_run):
    src, dst, proc = val1300_run
    assert proc.returncode == 0, proc.stderr
    images = sorted(src.glob("*.JPEG"))
    assert len(images) == 1300
    outputs = bins(dst)
    assert [p.stem for p in outputs] == [p.stem for p in images]
    for image, out in zip(images, outputs, strict=True):
        assert out.stat().st_size == FLOAT_BYTES
        assert read_tensor(out, "float32", 224, 224).tobytes() == torchvision_tensor(image).tobytes(), image.name
    summary = proc.stdout.strip().splitlines()[-1]
    assert "1300 written" in summary and "0 skipped" in summary and "0 failed" in summary and "images/s" in summary
    assert not (dst / "failed.txt").exists()
    assert not any(atomic.is_temporary(p) for p in dst.iterdir())


def test_fullsize_originals_and_modelzoo_alias(shared_data, tmp_path):
    src = shared_data / "imagenet_val_fullsize20"
    proc = run_script("preprocess.py", "repvgg", src, tmp_path / "prep", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    images = sorted(src.glob("*.JPEG"))
    for image in images:
        out = tmp_path / "prep" / f"{image.stem}.bin"
        assert read_tensor(out, "float32", 224, 224).tobytes() == torchvision_tensor(image).tobytes(), image.name


def test_uint8_is_the_crop_and_normalises_to_float32(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[:6], tmp_path / "src")
    assert run_script("preprocess.py", src, tmp_path / "f32", "--workers", "1").returncode == 0
    proc = run_script("preprocess.py", src, tmp_path / "u8", "--dtype", "uint8", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "uint8 224x224x3" in proc.stdout
    for out in bins(tmp_path / "u8"):
        assert out.stat().st_size == UINT8_BYTES
        pixels = read_tensor(out, "uint8", 224, 224)
        t = EvalTransform()
        on_host = ((pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
                   - np.array(t.mean, np.float32)[:, None, None]) / np.array(t.std, np.float32)[:, None, None]
        assert on_host.tobytes() == (tmp_path / "f32" / out.name).read_bytes(), out.name


def test_crop_320_for_d2se(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[:3], tmp_path / "src")
    proc = run_script("preprocess.py", src, tmp_path / "prep", "--crop", "320", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    for image in sorted(src.iterdir()):
        ref = torchvision_tensor(image, EvalTransform(resize=320, crop=320))
        assert read_tensor(tmp_path / "prep" / f"{image.stem}.bin", "float32", 320, 320).tobytes() == ref.tobytes()


def test_class_folders_write_labels_and_handle_odd_names(shared_data, tmp_path):
    real = sorted((shared_data / "imagenet_one_per_class").glob("*.JPEG"))
    src = tmp_path / "val"
    layout = {"n01440764": real[0:2], "n01443537": real[2:3], "n09999999": real[3:5]}
    for wnid, files in layout.items():
        (src / wnid).mkdir(parents=True)
        for path in files:
            shutil.copy(path, src / wnid / path.name)
    odd = src / "n01443537" / "a name with spaces ünï 画像.png"
    Image.open(real[5]).convert("RGBA").save(odd)
    (src / "n01440764" / "notes.txt").write_text("not an image")
    (src / "n01440764" / ".hidden.jpg").write_bytes(b"not an image either")

    proc = run_script("preprocess.py", src, tmp_path / "prep", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "class folders" in proc.stdout and "6 written" in proc.stdout and "1 non-image files ignored" in proc.stdout
    labels = read_labels(tmp_path / "prep" / "val_label.txt")
    expected = {Path(p.name).stem: i for i, files in enumerate(layout.values()) for p in files}
    expected[odd.stem] = 1
    assert labels == expected
    out = tmp_path / "prep" / f"{odd.stem}.bin"
    assert read_tensor(out, "float32", 224, 224).tobytes() == torchvision_tensor(odd).tobytes()


def test_resume_skips_complete_and_redoes_the_rest(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:12], tmp_path / "src")
    dst = tmp_path / "prep"
    assert run_script("preprocess.py", src, dst, "--workers", "2").returncode == 0
    reference = {p.name: p.read_bytes() for p in bins(dst)}
    outputs = bins(dst)
    outputs[0].unlink()                                        # never written
    outputs[1].write_bytes(outputs[1].read_bytes()[:1000])     # wrong size (written by something else)
    leftover = dst / f".{outputs[2].name}{atomic.TMP_MARKER}abc123"
    leftover.write_bytes(b"half a tensor")                     # an interrupted atomic write
    before = outputs[3].stat().st_mtime_ns

    proc = run_script("preprocess.py", src, dst, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 written" in proc.stdout and "10 skipped" in proc.stdout
    assert not leftover.exists()
    assert outputs[3].stat().st_mtime_ns == before  # complete outputs are not rewritten
    assert {p.name: p.read_bytes() for p in bins(dst)} == reference

    proc = run_script("preprocess.py", src, dst, "--workers", "1", "--overwrite")
    assert proc.returncode == 0 and "12 written" in proc.stdout
    assert {p.name: p.read_bytes() for p in bins(dst)} == reference


@pytest.mark.parametrize("sig, workers", [(signal.SIGKILL, "1"), (signal.SIGINT, "2")])
def test_interrupted_run_leaves_no_truncated_tensor(val1300_run, tmp_path, sig, workers):
    _, complete_run, _ = val1300_run
    # All 1,300 images: a run of a few seconds, so the interrupt lands mid-run even when the test
    # process is scheduled late on a busy machine (400 images once finished before the signal).
    images = sorted(val1300_run[0].glob("*.JPEG"))
    total = len(images)
    src = link_images(images, tmp_path / "src")
    dst = tmp_path / "prep"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "preprocess.py"), str(src), str(dst),
                             "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not dst.is_dir() or len(bins(dst)) < 40):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    partial = bins(dst)
    assert 40 <= len(partial) < total, len(partial)
    assert all(p.stat().st_size == FLOAT_BYTES for p in partial)  # whatever exists under a final name is whole

    rerun = run_script("preprocess.py", src, dst, "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - len(partial)} written" in rerun.stdout and f"{len(partial)} skipped" in rerun.stdout
    assert not any(atomic.is_temporary(p) for p in dst.iterdir())
    outputs = bins(dst)
    assert len(outputs) == total
    for out in outputs:
        assert out.read_bytes() == (complete_run / out.name).read_bytes(), out.name
    shutil.rmtree(dst)  # 240 MB: not worth keeping in pytest's last-3-runs folders


def test_unreadable_images_are_reported_and_the_rest_written(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:3], tmp_path / "src")
    good = sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[3].read_bytes()
    (src / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (src / "not an image.jpg").write_text("hello, I am text")
    (src / "empty.png").write_bytes(b"")
    dst = tmp_path / "prep"

    proc = run_script("preprocess.py", src, dst, "--workers", "2")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("truncated.JPEG", "not an image.jpg", "empty.png"):
        assert name in proc.stderr
    failed = (dst / "failed.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("\t")[0] for line in failed) == ["empty.png", "not an image.jpg", "truncated.JPEG"]
    assert len(bins(dst)) == 3 and "3 written" in proc.stdout and "3 failed" in proc.stdout

    for name in ("truncated.JPEG", "not an image.jpg", "empty.png"):
        (src / name).unlink()
    proc = run_script("preprocess.py", src, dst, "--workers", "2")
    assert proc.returncode == 0 and "3 skipped" in proc.stdout
    assert not (dst / "failed.txt").exists()  # the list always describes the latest run


def test_shards_split_the_set_deterministically(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:10], tmp_path / "src")
    dst = tmp_path / "prep"
    names = []
    for i in range(3):
        proc = run_script("preprocess.py", src, tmp_path / f"s{i}", "--shard", f"{i}/3", "--workers", "1")
        assert proc.returncode == 0, proc.stderr
        names.append({p.name for p in bins(tmp_path / f"s{i}")})
        assert run_script("preprocess.py", src, dst, "--shard", f"{i}/3", "--workers", "1").returncode == 0
    assert [len(n) for n in names] == [4, 3, 3]
    assert set().union(*names) == {p.name for p in bins(dst)} and len(bins(dst)) == 10


def test_bad_input_is_one_line_and_exit_2(tmp_path, shared_data):
    some_image = sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[0]
    assert_one_line_error(run_script("preprocess.py", tmp_path / "missing", tmp_path / "out"), 2, "not found")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    assert_one_line_error(run_script("preprocess.py", tmp_path / "empty", tmp_path / "out"), 2, "no images")
    src = link_images([some_image], tmp_path / "src")
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(run_script("preprocess.py", src, tmp_path / "a_file" / "out"), 2, "cannot write")
    assert_one_line_error(run_script("preprocess.py", src, tmp_path / "o", "--shard", "3/3"), 2, "--shard")
    assert_one_line_error(run_script("preprocess.py", "x", src, tmp_path / "o", "y"), 2, "expected SRC DST")
    assert_one_line_error(run_script("preprocess.py", src, tmp_path / "o", "--workers", "0"), 2, "--workers")
    twin = link_images([some_image], tmp_path / "twins")
    Image.open(some_image).save(twin / f"{some_image.stem}.png")
    assert_one_line_error(run_script("preprocess.py", twin, tmp_path / "o"), 2, "same output")
    mixed = link_images([some_image], tmp_path / "mixed")
    link_images([some_image], mixed / "n01440764")
    assert_one_line_error(run_script("preprocess.py", mixed, tmp_path / "o"), 2, "both images")


def test_other_settings_are_not_mixed_into_a_finished_folder(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:2], tmp_path / "src")
    dst = tmp_path / "prep"
    assert run_script("preprocess.py", src, dst, "--workers", "1").returncode == 0
    proc = run_script("preprocess.py", src, dst, "--mean", "0.5", "0.5", "0.5", "--workers", "1")
    assert_one_line_error(proc, 2, "other settings")
    proc = run_script("preprocess.py", src, dst, "--mean", "0.5", "0.5", "0.5", "--workers", "1", "--overwrite")
    assert proc.returncode == 0 and "2 written" in proc.stdout
    t = EvalTransform(mean=(0.5, 0.5, 0.5))
    for image in sorted(src.iterdir()):
        assert read_tensor(dst / f"{image.stem}.bin", "float32", 224, 224).tobytes() == \
            torchvision_tensor(image, t).tobytes()


def test_one_summary_line_and_a_quiet_stderr_when_not_on_a_terminal(shared_data, tmp_path):
    src = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:2], tmp_path / "src")
    proc = run_script("preprocess.py", src, tmp_path / "prep", "--workers", "1")
    assert proc.returncode == 0
    assert len(proc.stdout.strip().splitlines()) == 1  # exactly one summary line
    assert proc.stderr == ""  # the progress bar shows on a terminal only
