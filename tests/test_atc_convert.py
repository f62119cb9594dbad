"""scripts/atc_convert.sh against stand-in `atc` and `npu-smi` executables that record their arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error

SCRIPT = REPO_ROOT / "scripts" / "atc_convert.sh"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small ONNX model with the export's input/output names and a dynamic batch axis."""
    path = tmp_path_factory.mktemp("onnx") / "repvgg.onnx"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), input_names=["actual_input_1"],
                      output_names=["output1"], opset_version=11, dynamo=False,
                      dynamic_axes={"actual_input_1": {0: "-1"}, "output1": {0: "-1"}})
    return path


@pytest.fixture
def workdir(tmp_path, tiny_onnx) -> Path:
    shutil.copy(tiny_onnx, tmp_path / "repvgg.onnx")
    return tmp_path


def standin_env(log: Path, chip: str = "310P3", with_tools: bool = True, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATC_", "STANDIN_")) and k != "SOC_VERSION"}
    base_path = "/usr/bin:/bin"
    env.update(PATH=f"{STANDINS / 'bin'}:{base_path}" if with_tools else base_path, STANDIN_LOG=str(log),
               STANDIN_PYTHON=sys.executable, STANDIN_NPU_CHIP=chip, **extra)
    return env


def run_atc(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def calls(log: Path, tool: str = "atc") -> list[list[str]]:
    if not log.exists():
        return []
    return [c[1:] for c in map(json.loads, log.read_text().splitlines()) if c[0] == tool]


def expected_atc(batch: int, soc: str, onnx: str = "repvgg.onnx", prefix: str = "repvgg", size: str = "224,224",
                 extra: tuple[str, ...] = ()) -> list[str]:
    return ["--framework=5", f"--model={onnx}", f"--output={prefix}_bs{batch}", "--input_format=NCHW",
            f"--input_shape=actual_input_1:{batch},3,{size}", "--log=error", f"--soc_version={soc}", *extra]


@pytest.mark.parametrize(("chip", "soc"), [("310P3", "Ascend310P3"), ("310", "Ascend310")])
def test_default_builds_bs1_and_bs16_for_the_detected_chip(workdir, chip, soc):
    log = workdir / "calls.jsonl"
    proc = run_atc(workdir, standin_env(log, chip))
    assert proc.returncode == 0, proc.stderr
    assert calls(log, "npu-smi") == [["info"]]
    assert calls(log) == [expected_atc(1, soc), expected_atc(16, soc)]
    for batch in (1, 16):
        assert (workdir / f"repvgg_bs{batch}.om").stat().st_size > 0
    assert "built 2 OM models" in proc.stdout


def test_flags_override_environment_and_defaults(workdir):
    log = workdir / "calls.jsonl"
    env = standin_env(log, ATC_BATCH_SIZES="2", ATC_INPUT_SIZE="64", ATC_PRECISION_MODE="force_fp16")
    proc = run_atc(workdir, env, "--batch-sizes", "4,8", "--input-size=16", "--output-prefix", "out/m",
                   "--soc_version", "Ascend310P3", "--precision_mode", "allow_fp32_to_fp16")
    assert proc.returncode == 0, proc.stderr
    assert calls(log, "npu-smi") == []  # an explicit soc_version needs no detection
    extra = ("--precision_mode=allow_fp32_to_fp16",)
    assert calls(log) == [expected_atc(b, "Ascend310P3", prefix="out/m", size="16,16", extra=extra) for b in (4, 8)]
    assert sorted(p.name for p in (workdir / "out").glob("*.om")) == ["m_bs4.om", "m_bs8.om"]


def test_environment_variables_configure_the_run(workdir):
    log = workdir / "calls.jsonl"
    shutil.copy(workdir / "repvgg.onnx", workdir / "other.onnx")
    env = standin_env(log, ATC_ONNX="other.onnx", ATC_BATCH_SIZES="8", ATC_INPUT_SIZE="16", SOC_VERSION="Ascend310")
    proc = run_atc(workdir, env)
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == [expected_atc(8, "Ascend310", onnx="other.onnx", prefix="other", size="16,16")]


def test_aipp_writes_the_imagenet_config_and_passes_it(workdir):
    log = workdir / "calls.jsonl"
    proc = run_atc(workdir, standin_env(log), "--aipp", "--batch-sizes", "1", "--input-size", "16")
    assert proc.returncode == 0, proc.stderr
    config = workdir / "aipp.config"
    assert calls(log) == [expected_atc(1, "Ascend310P3", size="16,16", extra=("--insert_op_conf=./aipp.config",))]
    values = dict(line.strip().split(" : ") for line in config.read_text().splitlines() if " : " in line)
    assert values["input_format"] == "RGB888_U8" and values["aipp_mode"] == "static"
    assert values["src_image_size_w"] == values["src_image_size_h"] == "16"
    for channel in range(3):  # out = (x - 255*mean) * 1/(255*std)
        assert float(values[f"min_chn_{channel}"]) == pytest.approx(255 * MEAN[channel], abs=1e-9)
        assert float(values[f"var_reci_chn_{channel}"]) == pytest.approx(1 / (255 * STD[channel]), rel=1e-12)


def test_dry_run_prints_the_commands_and_touches_nothing(workdir):
    log = workdir / "calls.jsonl"
    env = standin_env(log, with_tools=False)  # no atc, no npu-smi: a dry run needs neither
    proc = run_atc(workdir, env, "--dry-run", "--soc_version", "Ascend310", "--aipp")
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith("atc ")]
    assert commands == [" ".join(["atc", *expected_atc(b, "Ascend310", extra=("--insert_op_conf=./aipp.config",))])
                        for b in (1, 16)]
    assert "min_chn_0 : 123.675" in proc.stdout
    assert sorted(p.name for p in workdir.iterdir()) == ["repvgg.onnx"]


def test_missing_atc_is_one_line_pointing_at_set_env(workdir):
    proc = run_atc(workdir, standin_env(workdir / "log", with_tools=False), "--soc_version", "Ascend310P3")
    assert_one_line_error(proc, 2, "set_env.sh")


def test_missing_onnx_and_bad_options_are_one_line_errors(workdir):
    env = standin_env(workdir / "log")
    assert_one_line_error(run_atc(workdir, env, "--onnx", "nope.onnx"), 2, "nope.onnx")
    assert_one_line_error(run_atc(workdir, env, "--batch-sizes", "1,x"), 2, "batch sizes")
    assert_one_line_error(run_atc(workdir, env, "--input-size", "0"), 2, "input size")
    assert_one_line_error(run_atc(workdir, env, "--frobnicate"), 2, "unknown option")
    no_tools = standin_env(workdir / "log", with_tools=False)  # neither CANN nor the driver set up
    assert_one_line_error(run_atc(workdir, no_tools), 2, "source /usr/local/Ascend/ascend-toolkit/set_env.sh")
    assert_one_line_error(run_atc(workdir, no_tools, "--dry-run"), 2, "--soc_version")  # a dry run needs no atc


def test_stale_om_never_passes_for_a_fresh_one(workdir):
    stale = workdir / "repvgg_bs1.om"
    stale.write_bytes(b"an OM from an earlier run")
    proc = run_atc(workdir, standin_env(workdir / "log", STANDIN_ATC_SKIP_OUTPUT="1"), "--batch-sizes", "1")
    assert proc.returncode == 1
    assert "repvgg_bs1.om was not written" in proc.stderr
    assert not stale.exists()


def test_atc_failure_stops_with_its_exit_code_reported(workdir):
    proc = run_atc(workdir, standin_env(workdir / "log", STANDIN_ATC_FAIL="1"))
    assert proc.returncode == 1
    assert "atc failed for batch 1 (exit code 1)" in proc.stderr
    assert not list(workdir.glob("*.om"))


def test_help_documents_flags_and_environment(workdir):
    proc = run_atc(workdir, standin_env(workdir / "log"), "--help")
    assert proc.returncode == 0
    for word in ("--soc_version", "--aipp", "--dry-run", "--precision_mode", "ATC_BATCH_SIZES", "SOC_VERSION",
                 "set_env.sh"):
        assert word in proc.stdout
