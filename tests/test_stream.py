"""Streaming (`infer.py MODEL IMAGES OUTPUT`): byte for byte the dumps of preprocess.py + infer.py, on real images,
for float32 (ONNX Runtime) and uint8 (an AIPP OM through the stand-in ais_bench), with failures, labels, resume
and Ctrl-C; and `run_pipeline.sh --stream`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repvgg_pipeline import atomic
from repvgg_pipeline.formats.labels import read_labels
from repvgg_pipeline.guards import MANIFEST_NAME
from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error, run_atc_standin, run_script
from tests.test_infer import _standin_env

SIZE = 224
BATCH = 8  # 20 images: 3 batches, the last padded by 4
FLOAT_BYTES = 3 * SIZE * SIZE * 4


def _export(path: Path, batch: int | None) -> None:
    """A small conv net at 224x224 (the real transform sizes), dynamic batch when `batch` is None."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    torch.onnx.export(model, torch.zeros(batch or 1, 3, SIZE, SIZE), str(path), input_names=["actual_input_1"],
                      output_names=["output1"], opset_version=11, dynamo=False,
                      dynamic_axes=None if batch else {"actual_input_1": {0: "-1"}, "output1": {0: "-1"}})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    _export(root / "dynamic.onnx", None)
    return root


def _atc(onnx: Path, output: Path, batch: int, aipp: Path | None = None) -> Path:
    return run_atc_standin(onnx, output, batch, SIZE, aipp)


def _aipp_config(onnx: Path, folder: Path) -> Path:
    """The AIPP config atc_convert.sh --aipp would use (its dry run prints it)."""
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "atc_convert.sh"), "--dry-run", "--aipp",
                           "--soc_version", "Ascend310P3", "--input-size", str(SIZE), "--onnx", str(onnx)],
                          capture_output=True, text=True, check=True)
    config = folder / "aipp.config"
    config.write_text("\n".join(line[2:] for line in proc.stdout.splitlines() if line.startswith("# ")
                                and not line.startswith("# would")))
    return config


def link_images(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def listing(folder: Path) -> list[Path]:
    """A dump folder's entries but infer.py's hidden record of the dumps it writes (guards.MANIFEST_NAME)."""
    return [p for p in folder.iterdir() if p.name != MANIFEST_NAME]


def dumps_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(listing(folder))}


def tensor_files(root: Path) -> list[Path]:
    """Anything under `root` that looks like an input tensor: a .bin of a whole image's size."""
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size in (FLOAT_BYTES, SIZE * SIZE * 3)]


def two_step(model: Path, images: Path, work: Path, *options: str, env: dict | None = None,
             expect: int = 0) -> Path:
    """preprocess.py + infer.py into work/two_step/bs8; returns the dump folder."""
    pre = run_script("preprocess.py", images, work / "prep", "--workers", "2", *options)
    assert pre.returncode == expect, pre.stderr
    proc = run_script("infer.py", model, work / "prep", work / "two_step", "--output_dirname", "bs8",
                      "--batch-size", BATCH, env=env)
    assert proc.returncode == 0, proc.stderr
    return work / "two_step" / "bs8"


def assert_same_summary_entries(two_step_dir: Path, stream_dir: Path, images: Path) -> None:
    ref = json.loads((two_step_dir.parent / "bs8_summary.json").read_text())["filesinfo"]
    got = json.loads((stream_dir.parent / "bs8_summary.json").read_text())["filesinfo"]
    assert list(got) == list(ref)  # same sample numbers, same order
    assert [Path(v["outfiles"][0]).name for v in got.values()] == [Path(v["outfiles"][0]).name for v in ref.values()]
    assert all(Path(v["infiles"][0]).parent.is_relative_to(images) for v in got.values())  # the images themselves


def test_float32_stream_equals_two_step_byte_for_byte(shared_data, models, tmp_path):
    images = shared_data / "imagenet_val_fullsize20"  # originals up to 2816x2112, one grayscale
    reference = two_step(models / "dynamic.onnx", images, tmp_path)
    out = tmp_path / "stream"
    proc = run_script("infer.py", models / "dynamic.onnx", images, out, "--output_dirname", "bs8",
                      "--batch-size", BATCH, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert dumps_of(out / "bs8") == dumps_of(reference) and len(dumps_of(reference)) == 20
    assert_same_summary_entries(reference, out / "bs8", images)
    assert sorted(p.name for p in out.iterdir()) == ["bs8", "bs8_summary.json"]  # no tensors, no failed.txt
    assert not tensor_files(out)
    last = proc.stdout.strip().splitlines()[-1]
    assert "20 inputs in 3 batches of 8 (4 padding rows)" in last and "img/s" in last

    (out / "bs8" / "ILSVRC2012_val_00008570_0.bin").unlink()
    (out / "bs8" / "ILSVRC2012_val_00038902_0.bin").unlink()
    resumed = run_script("infer.py", models / "dynamic.onnx", images, out, "--output_dirname", "bs8",
                         "--batch-size", BATCH, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "2 inputs in 1 batches of 8 (6 padding rows), 18 kept from an earlier run" in resumed.stdout
    assert dumps_of(out / "bs8") == dumps_of(reference)
    assert len(json.loads((out / "bs8_summary.json").read_text())["filesinfo"]) == 20


def test_uint8_stream_through_an_aipp_om_equals_two_step(shared_data, models, tmp_path):
    om = _atc(models / "dynamic.onnx", tmp_path / "u8_bs8", BATCH, aipp=_aipp_config(models / "dynamic.onnx",
                                                                                       tmp_path))
    images = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:21], tmp_path / "images")
    env = _standin_env()
    reference = two_step(om, images, tmp_path, "--dtype", "uint8", env=env)
    out = tmp_path / "stream"
    # no --dtype: the OM's uint8 N,H,W,C input says it
    proc = run_script("infer.py", om, images, out, "--output_dirname", "bs8", "--workers", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    assert dumps_of(out / "bs8") == dumps_of(reference) and len(dumps_of(reference)) == 21
    assert_same_summary_entries(reference, out / "bs8", images)
    assert not tensor_files(out) and "ais_bench on npu:0" in proc.stdout

    wrong = run_script("infer.py", om, images, out, "--dtype", "float32", env=env)
    assert_one_line_error(wrong, 2, "--dtype uint8")


@pytest.mark.parametrize("backend", ["onnxruntime", "ais_bench"])
def test_class_folders_labels_and_unreadable_images(shared_data, models, tmp_path, backend):
    real = sorted((shared_data / "imagenet_one_per_class").glob("*.JPEG"))
    images = tmp_path / "val"
    layout = {"n01440764": real[0:4], "n01443537": real[4:6], "n09999999": real[6:11]}
    for wnid, files in layout.items():
        link_images(files, images / wnid)
    (images / "n01443537" / "truncated.JPEG").write_bytes(real[11].read_bytes()[:2000])
    (images / "n09999999" / "not an image.jpg").write_text("hello, I am text")
    model, env = models / "dynamic.onnx", None
    if backend == "ais_bench":
        model, env = _atc(models / "dynamic.onnx", tmp_path / "f32_bs8", BATCH), _standin_env()
    reference = two_step(model, images, tmp_path, env=env, expect=1)

    out = tmp_path / "stream"
    proc = run_script("infer.py", model, images, out, "--output_dirname", "bs8", "--batch-size", BATCH, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "n01443537/truncated.JPEG" in proc.stderr and "n09999999/not an image.jpg" in proc.stderr
    assert "2 images could not be read" in proc.stderr.splitlines()[-1]
    failed = (out / "failed.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in failed] == ["n01443537/truncated.JPEG", "n09999999/not an image.jpg"]
    assert (out / "failed.txt").read_text() == (tmp_path / "prep" / "failed.txt").read_text()
    assert dumps_of(out / "bs8") == dumps_of(reference) and len(dumps_of(reference)) == 11  # the rest, scored
    assert_same_summary_entries(reference, out / "bs8", images)
    assert read_labels(out / "val_label.txt") == read_labels(tmp_path / "prep" / "val_label.txt")
    assert "11 inputs in 2 batches of 8" in proc.stdout and "2 unreadable" in proc.stdout

    for bad in ("n01443537/truncated.JPEG", "n09999999/not an image.jpg"):
        (images / bad).unlink()
    again = run_script("infer.py", model, images, out, "--output_dirname", "bs8", "--batch-size", BATCH, env=env)
    assert again.returncode == 0, again.stderr
    assert not (out / "failed.txt").exists()  # the list always describes the latest run


def _our_processes(marker: str) -> list[int]:
    """Pids of live processes whose command line holds `marker` (the run's unique output path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ctrl_c_is_clean_and_resume_finishes(shared_data, models, tmp_path):
    images = shared_data / "imagenet_val_1300"
    out = tmp_path / "interrupted"
    args = [sys.executable, str(REPO_ROOT / "infer.py"), str(models / "dynamic.onnx"), str(images), str(out),
            "--output_dirname", "bs8", "--batch-size", str(BATCH), "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not (out / "bs8").is_dir() or len(list(listing(out / "bs8"))) < 40):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    time.sleep(0.2)
    assert not _our_processes(str(out)), "a worker outlived the run"
    # whatever exists under a final name is whole (a write cut short leaves only a temporary name)
    partial = [p for p in listing(out / "bs8") if not atomic.is_temporary(p)]
    assert 40 <= len(partial) < 1300 and all(p.stat().st_size == 40 for p in partial)
    assert not (out / "bs8_summary.json").exists()

    resumed = run_script("infer.py", models / "dynamic.onnx", images, out, "--output_dirname", "bs8",
                         "--batch-size", BATCH, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial)} kept from an earlier run" in resumed.stdout
    assert len(list(listing(out / "bs8"))) == 1300  # no temporary left behind either
    assert len(json.loads((out / "bs8_summary.json").read_text())["filesinfo"]) == 1300
    shutil.rmtree(out)


def test_a_worker_that_dies_ends_the_run_with_one_line(shared_data, models, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "infer.py"), str(models / "dynamic.onnx"),
                             str(shared_data / "imagenet_val_1300"), str(out), "--output_dirname", "bs8",
                             "--batch-size", str(BATCH), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not (out / "bs8").is_dir() or len(list(listing(out / "bs8"))) < 16):
        time.sleep(0.02)
    workers = [pid for pid in _our_processes(str(out)) if pid != proc.pid]
    assert len(workers) == 2 and proc.poll() is None
    os.kill(workers[0], signal.SIGKILL)  # as the OOM killer or a crashing decoder would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "decoding worker died" in err
    time.sleep(0.2)
    assert not _our_processes(str(out))


@pytest.mark.parametrize("depth", [0, 2])
def test_images_in_flight_are_bounded_by_the_queue_depth(shared_data, tmp_path, monkeypatch, depth):
    """Whatever the number of images, at most depth x batch (depth 0: the one batch being assembled) in flight."""
    from repvgg_pipeline.runner import Geometry
    from repvgg_pipeline.sources import images as stream

    folder = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:100], tmp_path / "images")
    outstanding, peak = [0], [0]
    submit, next_into = stream.DecodePool.submit, stream.DecodePool.next_into

    def counting_submit(self, path):
        outstanding[0] += 1
        peak[0] = max(peak[0], outstanding[0])
        submit(self, path)

    def counting_next_into(self, out):
        outstanding[0] -= 1
        return next_into(self, out)

    monkeypatch.setattr(stream.DecodePool, "submit", counting_submit)
    monkeypatch.setattr(stream.DecodePool, "next_into", counting_next_into)
    source = stream.ImageStream(folder, stream.StreamOptions(workers=2, depth=depth))
    geometry = Geometry("uint8", 3, SIZE, SIZE)
    source.check(geometry)
    rows = []
    for batch in source.batches(list(enumerate(source.samples)), 4, geometry, overlap=False):
        time.sleep(0.005)  # a slow device: the workers run ahead as far as they may
        rows.extend(index for index, _ in batch.rows)
    assert rows == list(range(100))
    assert peak[0] == (8 if depth else 4)


def test_stream_option_errors_are_one_line(shared_data, models, tmp_path):
    images = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:2], tmp_path / "images")
    model = models / "dynamic.onnx"
    assert_one_line_error(run_script("infer.py", model, images, tmp_path / "o", "--crop", "256"), 2, "--crop 256")
    assert_one_line_error(run_script("infer.py", model, images, tmp_path / "o", "--workers", "0"), 2, "--workers")
    assert_one_line_error(run_script("infer.py", model, images, tmp_path / "o", "--shard", "2/2"), 2, "--shard")
    assert_one_line_error(run_script("infer.py", model, images, tmp_path / "o", "--std", "0", "1", "1"), 2, "--std")
    info = tmp_path / "x.info"
    info.write_text("0 a.bin 224 224\n")
    assert_one_line_error(run_script("infer.py", model, info, tmp_path / "o", "--stream"), 2, "not a folder")
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "a.bin").write_bytes(b"\0" * FLOAT_BYTES)
    assert_one_line_error(run_script("infer.py", model, bins, tmp_path / "o", "--crop", "224"), 2,
                          "applies to a folder of images")
    mixed = link_images([next(images.iterdir())], tmp_path / "mixed")
    link_images([next(images.iterdir())], mixed / "n01440764")
    assert_one_line_error(run_script("infer.py", model, mixed, tmp_path / "o"), 2, "both images")


def test_shards_stream_their_share(shared_data, models, tmp_path):
    images = link_images(sorted((shared_data / "imagenet_val_1300").glob("*.JPEG"))[:10], tmp_path / "images")
    names = []
    for i in range(2):
        proc = run_script("infer.py", models / "dynamic.onnx", images, tmp_path / "out", "--output_dirname", f"s{i}",
                          "--shard", f"{i}/2", "--workers", "1")
        assert proc.returncode == 0, proc.stderr
        names.append({p.name for p in listing(tmp_path / "out" / f"s{i}")})
    assert [len(n) for n in names] == [5, 5] and not names[0] & names[1]


def test_run_pipeline_stream_writes_no_tensors(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(STANDINS / "bin"))
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "run_pipeline.sh"), "--stream", "--batch-sizes", "16"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = tmp_path / "demo_out"
    assert not (work / "prep_bin").exists() and not (work / "repvgg_prep_bin.info").exists()
    assert not tensor_files(work / "result")
    assert json.loads((work / "result_bs16.json").read_text())["metrics"]["images"] == 32
