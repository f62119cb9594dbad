"""End to end: checkpoint -> pth2onnx -> preprocess -> infer -> postprocess equals the PyTorch model on real images;
and scripts/run_pipeline.sh, both as the no-argument demo on ONNX Runtime and on the Ascend path with stand-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repvgg_pipeline.dataset import natural_key
from repvgg_pipeline.formats.labels import image_key, read_labels, write_labels
from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error, run_script

IMAGES = 200  # a few hundred real images keep the CI time small; per-image agreement is the strong check
BATCH = 16
NEAR_TIE = 1e-4  # relative top-1/top-2 gap below which float differences may legitimately flip the argmax


@pytest.fixture(scope="module")
def e2e(shared_data, tmp_path_factory):
    """Run the pipeline's steps on real ImageNet images and compute the train-time PyTorch reference."""
    from PIL import Image
    from torchvision import transforms

    from repvgg_model import load_checkpoint, write_random_checkpoint

    source = shared_data / "imagenet_val_1300"
    root = tmp_path_factory.mktemp("e2e")
    images = root / "images"
    images.mkdir()
    all_labels = read_labels(source / "val_label.txt")
    files = sorted((p for p in source.iterdir() if image_key(p.name) in all_labels), key=lambda p: natural_key(p.name))
    files = files[:IMAGES]
    for path in files:
        (images / path.name).symlink_to(path)
    labels = root / "val_label.txt"
    write_labels(labels, [(p.name, all_labels[image_key(p.name)]) for p in files])

    checkpoint = root / "RepVGG-A0-random.pth"
    write_random_checkpoint(checkpoint, arch="RepVGG-A0", seed=0)
    steps = [
        ("pth2onnx.py", checkpoint, root / "repvgg.onnx", "--skip-verify"),
        ("preprocess.py", images, root / "prep"),
        ("infer.py", root / "repvgg.onnx", root / "prep", root / "result", "--output_dirname", "bs16",
         "--batch-size", BATCH),
        ("postprocess.py", root / "result" / "bs16", labels, root / "result.json"),
    ]
    for step in steps:
        proc = run_script(*step)
        assert proc.returncode == 0, (step[0], proc.stdout, proc.stderr)

    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    model = load_checkpoint(checkpoint).model.eval()  # the train-time (unfused) network
    with torch.no_grad():
        logits = torch.cat([model(torch.stack([transform(Image.open(p).convert("RGB")) for p in files[i:i + 50]]))
                            for i in range(0, len(files), 50)]).numpy()
    return {"root": root, "files": files, "labels": [all_labels[image_key(p.name)] for p in files],
            "reference": logits}


def test_per_image_top1_matches_pytorch(e2e):
    dumps = e2e["root"] / "result" / "bs16"
    got = np.stack([np.fromfile(dumps / f"{image_key(p.name)}_0.bin", dtype=np.float32) for p in e2e["files"]])
    reference = e2e["reference"]
    assert got.shape == reference.shape == (IMAGES, 1000)
    top2 = np.sort(reference, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) < NEAR_TIE * np.abs(top2[:, 1])
    assert near_tie.sum() <= IMAGES // 100, "too many near-ties for a meaningful per-image comparison"
    agree = got.argmax(1) == reference.argmax(1)
    assert agree[~near_tie].all(), np.flatnonzero(~agree & ~near_tie)
    assert len(set(reference.argmax(1).tolist())) >= 20, "predictions should spread over classes"
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-3 * np.abs(reference).max())


def test_accuracy_equals_pytorch_reference(e2e):
    reference = e2e["reference"]
    labels = np.array(e2e["labels"])
    top5 = np.argsort(-reference, axis=1)[:, :5]
    expected_top1 = float(np.mean(top5[:, 0] == labels))
    expected_top5 = float(np.mean((top5 == labels[:, None]).any(1)))
    result = json.loads((e2e["root"] / "result.json").read_text())
    table = {item["key"]: item["value"] for item in result["value"]}
    assert table["Number of images"] == str(IMAGES)
    assert result["metrics"]["top1"] == pytest.approx(expected_top1, abs=1e-12)
    assert result["metrics"]["top5"] == pytest.approx(expected_top5, abs=1e-12)
    assert table["Top1 accuracy"] == str(round(expected_top1 * 100, 2)) + "%"
    assert table["Top5 accuracy"] == str(round(expected_top5 * 100, 2)) + "%"


# ---------------------------------------------------------------- scripts/run_pipeline.sh

def run_pipeline(*args: object, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "run_pipeline.sh"), *map(str, args)],
                          cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


def _plain_env() -> dict:
    """No Ascend tools on PATH: the ONNX Runtime path."""
    env = dict(os.environ, PYTHON=sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(STANDINS / "bin"))
    return env


def _table(text: str) -> list[list[str]]:
    """The closing table: the first table of report.md (the sections after it have tables of their own)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [line.strip("|").split("|") for line in lines[first:end]]
    return [[cell.strip() for cell in row] for row in rows[1:] if row[0].strip() != "---"]


def test_demo_runs_with_no_arguments_on_onnx_runtime(tmp_path):
    proc = run_pipeline(env=_plain_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "demo_out" / "report.md").read_text()
    rows = _table(report)
    # the float32 runs, then the drift runs at the largest batch: the FP16 preview and the PyTorch reference
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("RepVGG-A0", "onnxruntime", "1", "32"),
                                                       ("RepVGG-A0", "onnxruntime", "16", "32"),
                                                       ("RepVGG-A0", "onnxruntime-fp16", "16", "32"),
                                                       ("RepVGG-A0", "torch", "16", "32")]
    assert all(float(r[6]) > 0 for r in rows)
    assert "meaningless" in proc.stdout and "top-1 agreement PyTorch vs ONNX Runtime 32/32" in proc.stdout
    result = json.loads((tmp_path / "demo_out" / "result_bs1.json").read_text())
    assert result["metrics"]["images"] == 32
    # accuracy computed once: batch 16 gave every image the same top-5 as batch 1
    agreement = json.loads((tmp_path / "demo_out" / "batch_agreement.json").read_text())
    assert [(c["name"], c["equal"]) for c in agreement["comparisons"]] == [("bs16", True)]
    assert not (tmp_path / "demo_out" / "result_bs16.json").exists()
    assert (tmp_path / "demo_out" / "report.html").stat().st_size > 10_000
    record = (tmp_path / "demo_out" / ".run_pipeline-settings").read_text()  # what a rerun must match
    assert "input_size=224" in record and "arch=RepVGG-A0" in record and "tensor_dtype=float32" in record


def test_pipeline_takes_the_ascend_path_when_atc_and_npu_smi_exist(tmp_path):
    log = tmp_path / "calls.jsonl"
    env = _plain_env()
    env.update(PATH=f"{STANDINS / 'bin'}{os.pathsep}{env['PATH']}", PYTHONPATH=str(STANDINS), STANDIN_LOG=str(log),
               STANDIN_PYTHON=sys.executable, STANDIN_NPU_CHIP="310P3")
    proc = run_pipeline("--workdir", tmp_path / "w", "--batch-sizes", "16", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    atc_calls = [c for c in map(json.loads, log.read_text().splitlines()) if c[0] == "atc"]
    assert atc_calls == [["atc", "--framework=5", f"--model={tmp_path / 'w' / 'repvgg.onnx'}",
                          f"--output={tmp_path / 'w' / 'repvgg_bs16'}", "--input_format=NCHW",
                          "--input_shape=actual_input_1:16,3,224,224", "--log=error", "--soc_version=Ascend310P3"]]
    rows = _table((tmp_path / "w" / "report.md").read_text())
    # the OM, then the drift runs on the host: ONNX Runtime float32 and the PyTorch reference
    assert [(r[1], r[2], r[3]) for r in rows] == [("ais_bench", "16", "32"), ("onnxruntime", "16", "32"),
                                                  ("torch", "16", "32")]
    assert float(rows[0][7]) == pytest.approx(float(rows[0][6]), rel=1e-3)  # 310P: one chip per card
    summary = json.loads((tmp_path / "w" / "result" / "bs16_summary.json").read_text())
    assert summary["args"]["backend"] == "ais_bench" and summary["args"]["model"].endswith("repvgg_bs16.om")


def test_pipeline_option_errors_are_one_line(tmp_path):
    env = _plain_env()
    assert_one_line_error(run_pipeline("--checkpoint", tmp_path / "x.pth", env=env), 2, "--images")
    assert_one_line_error(run_pipeline("--checkpoint", tmp_path / "x.pth", "--images", tmp_path, env=env), 2,
                          "checkpoint not found")
    assert_one_line_error(run_pipeline("--backend", "tpu", env=env), 2, "--backend")


def test_demo_images_are_deterministic_and_varied(tmp_path):
    from PIL import Image

    from repvgg_pipeline.demo import write_demo_images

    first = write_demo_images(tmp_path / "a", count=8)
    write_demo_images(tmp_path / "b", count=8)
    assert [n for n, _ in first] == sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != "val_label.txt")
    for name, _ in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    opened = [Image.open(tmp_path / "a" / name) for name, _ in first]
    assert {im.format for im in opened} == {"JPEG", "PNG"}
    assert "L" in {im.mode for im in opened}
    assert len({im.size for im in opened}) == 8 and min(min(im.size) for im in opened) < 224
    assert read_labels(tmp_path / "a" / "val_label.txt") == {image_key(n): label for n, label in first}
