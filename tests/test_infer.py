"""infer.py and the runner: ONNX Runtime for real, the OM path through the stand-in ais_bench package."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.info import InfoEntry, write_info
from repvgg_pipeline.formats.summary import PERCENTILE_KEY
from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error, run_atc_standin, run_script

SIZE = 32
CLASSES = 10
COUNT = 10  # with batch 4: 3 batches, the last padded by 2
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _export(model: torch.nn.Module, path: Path, dynamic: bool) -> None:
    batch = 1 if dynamic else 4
    torch.onnx.export(model, torch.zeros(batch, 3, SIZE, SIZE), str(path), input_names=["actual_input_1"],
                      output_names=["output1"], opset_version=11, dynamo=False,
                      dynamic_axes={"actual_input_1": {0: "-1"}, "output1": {0: "-1"}} if dynamic else None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small conv net as ONNX (dynamic and static batch 4), 10 float32 tensors, their uint8 twins, an info file."""
    root = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, CLASSES)).eval()
    _export(model, root / "dynamic.onnx", dynamic=True)
    _export(model, root / "static4.onnx", dynamic=False)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (COUNT, SIZE, SIZE, 3), dtype=np.uint8)
    normalised = ((pixels.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy()
    (root / "bins").mkdir()
    (root / "u8").mkdir()
    names = [f"img{i}" for i in range(1, COUNT + 1)]  # natural order: img1, img2, ..., img10
    for name, tensor, raw in zip(names, normalised, pixels, strict=True):
        tensors.write_tensor(root / "bins" / f"{name}.bin", tensor)
        tensors.write_tensor(root / "u8" / f"{name}.bin", raw)
    write_info(root / "bins.info", [InfoEntry(i, str(root / "bins" / f"{n}.bin"), SIZE, SIZE)
                                    for i, n in enumerate(names)])
    with torch.no_grad():
        expected = model(torch.from_numpy(normalised)).numpy()
    return {"root": root, "names": names, "expected": dict(zip(names, expected, strict=True)),
            "dynamic": root / "dynamic.onnx", "static": root / "static4.onnx"}


def read_dumps(folder: Path, names: list[str], suffix: str = ".bin") -> np.ndarray:
    rows = []
    for name in names:
        path = folder / f"{name}_0{suffix}"
        if suffix == ".bin":
            rows.append(np.fromfile(path, dtype=np.float32).reshape(1, -1))
        elif suffix == ".npy":
            rows.append(np.load(path))
        else:
            rows.append(np.loadtxt(path, ndmin=2))
    return np.concatenate(rows)


def expected_matrix(data) -> np.ndarray:
    return np.stack([data["expected"][n] for n in data["names"]])


def test_onnx_runtime_writes_ais_bench_layout(data, tmp_path):
    out = tmp_path / "result"
    proc = run_script("infer.py", data["dynamic"], data["root"] / "bins", out, "--output_dirname", "bs4",
                      "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    dumps = out / "bs4"
    # ais_bench's layout, plus the hidden manifest of what infer.py wrote (the only files a rerun may delete)
    assert sorted(p.name for p in dumps.iterdir() if p.name != ".infer_dumps.json") == \
        sorted(f"{n}_0.bin" for n in data["names"])
    assert all((dumps / f"{n}_0.bin").stat().st_size == 4 * CLASSES for n in data["names"])
    np.testing.assert_allclose(read_dumps(dumps, data["names"]), expected_matrix(data), rtol=1e-4, atol=1e-5)

    summary = json.loads((out / "bs4_summary.json").read_text())
    assert [Path(v["infiles"][0]).stem for v in summary["filesinfo"].values()] == data["names"]  # natural order
    assert [Path(v["outfiles"][0]).name for v in summary["filesinfo"].values()] == [f"{n}_0.bin" for n in
                                                                                     data["names"]]
    compute = summary["NPU_compute_time"]
    assert compute["count"] == 3 == len(summary["npu_compute_time_list"])
    assert compute["min"] <= compute["median"] <= compute["max"] and compute["min"] <= compute[PERCENTILE_KEY]
    assert summary["throughput"] == pytest.approx(1000 * 4 / compute["mean"])
    assert summary["H2D_latency"]["count"] == 0  # CPU: no host<->device copy happened
    assert summary["args"]["backend"] == "onnxruntime" and summary["args"]["batchsize"] == 4
    assert "-----------------Performance Summary------------------" in proc.stdout
    assert f"throughput 1000*batchsize.mean(4)/NPU_compute_time.mean({compute['mean']})" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert "10 inputs in 3 batches of 4 (2 padding rows)" in last and "img/s" in last


@pytest.mark.parametrize("outfmt", ["NPY", "TXT"])
def test_other_output_formats_hold_the_same_numbers(data, tmp_path, outfmt):
    proc = run_script("infer.py", data["dynamic"], data["root"] / "bins.info", tmp_path, "--output_dirname", "x",
                      "--outfmt", outfmt.lower(), "--batch-size", "3", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    got = read_dumps(tmp_path / "x", data["names"], "." + outfmt.lower())
    assert got.shape == (COUNT, CLASSES)
    np.testing.assert_allclose(got, expected_matrix(data), rtol=1e-4, atol=2e-6)


def test_static_model_sets_the_batch_and_refuses_another(data, tmp_path):
    proc = run_script("infer.py", data["static"], data["root"] / "bins", tmp_path, "--output_dirname", "s")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s_summary.json").read_text())["args"]["batchsize"] == 4
    np.testing.assert_allclose(read_dumps(tmp_path / "s", data["names"]), expected_matrix(data), rtol=1e-4, atol=1e-5)
    conflict = run_script("infer.py", data["static"], data["root"] / "bins", tmp_path, "--batch-size", "8")
    assert_one_line_error(conflict, 2, "fixed batch size of 4")


def test_default_output_dirname_is_a_timestamp(data, tmp_path):
    proc = run_script("infer.py", data["dynamic"], data["root"] / "bins", tmp_path)
    assert proc.returncode == 0, proc.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folder.name) == len("2024_01_31-12_00_00") and folder.name[4] == folder.name[7] == "_"
    assert (tmp_path / f"{folder.name}_summary.json").is_file()


def test_wrong_size_input_names_the_file_and_expected_size(data, tmp_path):
    bins = tmp_path / "bins"
    bins.mkdir()
    for name in data["names"][:3]:
        (bins / f"{name}.bin").write_bytes((data["root"] / "bins" / f"{name}.bin").read_bytes())
    (bins / "img2.bin").write_bytes(b"\0" * 1000)
    proc = run_script("infer.py", data["dynamic"], bins, tmp_path / "out", "--output_dirname", "r")
    assert_one_line_error(proc, 2, "img2.bin: 1000 bytes, expected 12288")
    assert not (tmp_path / "out" / "r_summary.json").exists()


def test_uint8_tensors_are_refused_for_an_onnx_model(data, tmp_path):
    proc = run_script("infer.py", data["dynamic"], data["root"] / "u8", tmp_path)
    assert_one_line_error(proc, 2, "--dtype float32")


def test_bad_invocations_are_one_line_errors(data, tmp_path):
    assert_one_line_error(run_script("infer.py", tmp_path / "missing.onnx", data["root"] / "bins", tmp_path), 2,
                          "model file not found")
    model_txt = tmp_path / "model.txt"
    model_txt.write_text("x")
    assert_one_line_error(run_script("infer.py", model_txt, data["root"] / "bins", tmp_path), 2, "--backend")
    assert_one_line_error(run_script("infer.py", data["dynamic"], tmp_path / "none", tmp_path), 2, "input not found")
    assert_one_line_error(run_script("infer.py", data["dynamic"], tmp_path, tmp_path), 2, "no .bin files")
    assert_one_line_error(run_script("infer.py", data["dynamic"]), 2, "--loop")
    assert_one_line_error(run_script("infer.py", data["dynamic"], data["root"] / "bins", tmp_path,
                                     "--output_dirname", "../b"), 2, "relative to OUTPUT")  # a/b, x/: as ais_bench


def test_loop_without_inputs_measures_throughput(data):
    proc = run_script("infer.py", data["dynamic"], "--loop", "5", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "throughput 1000*batchsize.mean(2)" in proc.stdout
    assert "10 random inputs in 5 batches of 2" in proc.stdout


def test_resume_runs_only_what_is_missing_and_fresh_runs_clear_old_dumps(data, tmp_path):
    args = ("infer.py", data["dynamic"], data["root"] / "bins", tmp_path, "--output_dirname", "r", "--batch-size", "4")
    assert run_script(*args).returncode == 0
    (tmp_path / "r" / "img7_0.bin").unlink()
    resumed = run_script(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 inputs in 1 batches of 4 (3 padding rows), 9 kept from an earlier run" in resumed.stdout
    summary = json.loads((tmp_path / "r_summary.json").read_text())
    assert len(summary["filesinfo"]) == COUNT
    np.testing.assert_allclose(read_dumps(tmp_path / "r", data["names"]), expected_matrix(data), rtol=1e-4,
                               atol=1e-5)
    # a dump infer.py wrote for an input that is gone is removed by a fresh run ...
    extra = tmp_path / "more"
    extra.mkdir()
    for name in data["names"][:2]:
        os.link(data["root"] / "bins" / f"{name}.bin", extra / f"{name}.bin")
    os.link(data["root"] / "bins" / "img1.bin", extra / "old_image.bin")
    assert run_script(*args[:2], extra, *args[3:]).returncode == 0
    assert (tmp_path / "r" / "old_image_0.bin").exists()
    assert run_script(*args).returncode == 0
    assert not (tmp_path / "r" / "old_image_0.bin").exists()
    # ... but one it did not write is never deleted (nor scored with the new ones): the run stops, naming it
    stale = tmp_path / "r" / "by_hand_0.bin"
    stale.write_bytes(b"\0" * 40)
    assert_one_line_error(run_script(*args), 2, "by_hand_0.bin")
    assert stale.read_bytes() == b"\0" * 40


# ---------------------------------------------------------------- OM models through the stand-in ais_bench

def _standin_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDINS), str(REPO_ROOT)])
    env.update(extra)
    return env


def _atc(onnx: Path, output: Path, batch: int, aipp: Path | None = None) -> None:
    run_atc_standin(onnx, output, batch, SIZE, aipp)


def test_om_model_runs_through_ais_bench_with_the_same_output(data, tmp_path):
    _atc(data["dynamic"], tmp_path / "m_bs4", 4)
    proc = run_script("infer.py", tmp_path / "m_bs4.om", data["root"] / "bins", tmp_path / "out",
                      "--output_dirname", "om", env=_standin_env())
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(read_dumps(tmp_path / "out" / "om", data["names"]), expected_matrix(data),
                               rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "om_summary.json").read_text())
    assert summary["args"]["backend"] == "ais_bench" and summary["args"]["batchsize"] == 4
    assert summary["NPU_compute_time"]["count"] == 3
    assert summary["H2D_latency"]["count"] == 3 == summary["D2H_latency"]["count"]
    assert "ais_bench on npu:0" in proc.stdout


def test_aipp_om_takes_uint8_tensors(data, tmp_path):
    config = tmp_path / "aipp.config"
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "atc_convert.sh"), "--dry-run", "--aipp",
                           "--soc_version", "Ascend310P3", "--input-size", str(SIZE), "--onnx", str(data["dynamic"])],
                          capture_output=True, text=True, check=True)
    config.write_text("\n".join(line[2:] for line in proc.stdout.splitlines() if line.startswith("# ")
                                and not line.startswith("# would")))
    _atc(data["dynamic"], tmp_path / "u8_bs4", 4, aipp=config)
    ok = run_script("infer.py", tmp_path / "u8_bs4.om", data["root"] / "u8", tmp_path, "--output_dirname", "u8",
                    env=_standin_env())
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_allclose(read_dumps(tmp_path / "u8", data["names"]), expected_matrix(data), rtol=1e-4,
                               atol=1e-4)
    wrong = run_script("infer.py", tmp_path / "u8_bs4.om", data["root"] / "bins", tmp_path, env=_standin_env())
    assert_one_line_error(wrong, 2, "--dtype uint8")


def test_om_errors_are_one_line(data, tmp_path):
    _atc(data["dynamic"], tmp_path / "m_bs4", 4)
    om = tmp_path / "m_bs4.om"
    bad_device = run_script("infer.py", om, data["root"] / "bins", tmp_path, "--device", "3", env=_standin_env())
    assert_one_line_error(bad_device, 2, "device 3")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    no_ais_bench = run_script("infer.py", om, data["root"] / "bins", tmp_path, env=env)
    assert_one_line_error(no_ais_bench, 2, "set_env.sh")
