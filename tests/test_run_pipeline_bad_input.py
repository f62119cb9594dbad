"""scripts/run_pipeline.sh (and atc_convert.sh) on bad input: every option and input is checked before step 1
(one line on stderr, exit 2, nothing written), step errors reach stderr, unreadable images are counted out
(exit 1 at the end, with the table), and a work folder refuses outputs of other settings (issue 9, items 20-23).

Validation tests stop before any step runs, so they cost a shell and one short Python start each. The few
tests that run steps use 64-pixel inputs and a handful of images."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error

SCRIPT = REPO_ROOT / "scripts" / "run_pipeline.sh"
ATC_SCRIPT = REPO_ROOT / "scripts" / "atc_convert.sh"
IMAGES = 8
SIZE = "64"
as_root = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")


def plain_env(**extra: str) -> dict:
    """No Ascend tools on PATH (the ONNX Runtime path), this interpreter as PYTHON."""
    env = dict(os.environ, PYTHON=sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(STANDINS / "bin"))
    env.update(extra)
    return env


def run_pipeline(*args: object, env: dict | None = None, cwd: Path | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=cwd or REPO_ROOT,
                          env=env or plain_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A random-weight RepVGG-A0 checkpoint, IMAGES generated images (flat) and their label file."""
    from repvgg_model import write_random_checkpoint
    from repvgg_pipeline.demo import write_demo_images

    root = tmp_path_factory.mktemp("pipeline_data")
    checkpoint = root / "A0 random ü.pth"  # a space and a non-ASCII letter in every path the script quotes
    write_random_checkpoint(checkpoint, arch="RepVGG-A0", seed=0)
    images = root / "images 图"
    write_demo_images(images, count=IMAGES)
    labels = root / "val label.txt"
    (images / "val_label.txt").rename(labels)
    return {"root": root, "checkpoint": checkpoint, "images": images, "labels": labels}


def user_args(data: dict, workdir: Path, **override: object) -> list[str]:
    options = {"--checkpoint": data["checkpoint"], "--images": data["images"], "--labels": data["labels"],
               "--workdir": workdir, "--input-size": SIZE, "--batch-sizes": "4"}
    options.update({f"--{k.replace('_', '-')}": v for k, v in override.items()})
    return [str(a) for k, v in options.items() if v is not None for a in (k, v)]


def assert_refused_before_work(proc: subprocess.CompletedProcess, workdir: Path, contains: str) -> None:
    """One line, exit 2, no step started and the work folder not created."""
    assert_one_line_error(proc, 2, contains)
    assert "== run_pipeline.sh" not in proc.stdout
    assert not workdir.exists()


# ---------------------------------------------------------------- item 21: everything is checked before step 1

@pytest.mark.parametrize(("override", "message"), [
    ({"labels": None}, "--labels"),  # a flat folder needs its labels
    ({"chip": "910B"}, "--chip: unknown chip '910B'"),
    ({"batch_sizes": "1 0"}, "positive integers"),
    ({"batch_sizes": "4,x"}, "positive integers"),
    ({"batch_sizes": "4 4"}, "given twice"),
    ({"batch_sizes": "100000"}, "too large"),
    ({"batch_sizes": " "}, "no batch sizes"),
    ({"input_size": "10"}, "from 32 to 2048"),
    ({"input_size": "224x"}, "--input-size"),
    ({"input_size": "99999999999999999999"}, "--input-size"),
    ({"device": "-1"}, "--device"),
    ({"backend": "tpu"}, "--backend"),
    ({"soc_version": "Ascend310P3"}, "--soc_version applies to OM models only"),
])
def test_bad_options_are_refused_before_step_one(data, tmp_path, override, message):
    workdir = tmp_path / "w"
    proc = run_pipeline(*user_args(data, workdir, **override))
    assert_refused_before_work(proc, workdir, message)


def test_checkpoint_problems_are_one_line(data, tmp_path):
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)
    (tmp_path / "empty.pth").touch()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {tmp_path / "missing.pth": "checkpoint not found", tmp_path: "is a folder", fifo: "not a regular file",
             tmp_path / "empty.pth": "is empty", tmp_path / "loop": "symlink loop"}
    for checkpoint, message in cases.items():
        proc = run_pipeline(*user_args(data, tmp_path / "w", checkpoint=checkpoint))
        assert_refused_before_work(proc, tmp_path / "w", message)


def test_image_folder_problems_are_one_line(data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {tmp_path / "missing": "image folder not found", tmp_path / "empty": "no images found",
             tmp_path / "notes": "no images found", data["labels"]: "not a folder", tmp_path / "loop": "symlink loop"}
    for images, message in cases.items():
        proc = run_pipeline(*user_args(data, tmp_path / "w", images=images))
        assert_refused_before_work(proc, tmp_path / "w", message)


def test_label_problems_are_one_line(data, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("ILSVRC2012_val_00000001.JPEG 65\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("demo_00001.JPEG cat\n")
    cases = {tmp_path / "missing.txt": "label file not found", other: "none of the 8 images", bad: "bad.txt:1"}
    for labels, message in cases.items():
        proc = run_pipeline(*user_args(data, tmp_path / "w", labels=labels))
        assert_refused_before_work(proc, tmp_path / "w", message)


@pytest.mark.parametrize(("python", "message"), [("/nonexistent/python3", "PYTHON=/nonexistent/python3: no such"),
                                                 ("/bin/false", "does not run Python 3.10+")])
def test_python_that_does_not_work_is_one_line_on_stderr(data, tmp_path, python, message):
    proc = run_pipeline(*user_args(data, tmp_path / "w"), env=plain_env(PYTHON=python))
    assert_refused_before_work(proc, tmp_path / "w", message)
    assert proc.stdout == ""


def test_python_without_the_packages_names_them(data, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    bare = tmp_path / "venv" / "bin" / "python"
    proc = run_pipeline(*user_args(data, tmp_path / "w"), env=plain_env(PYTHON=str(bare)))
    assert_refused_before_work(proc, tmp_path / "w", "lacks numpy, PIL, tqdm, torch, onnx, onnxruntime")


def test_ascend_backend_without_working_npu_smi_is_one_line(data, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("npu-smi", "echo 'dcmi module initialize failed' >&2; exit 1"), ("atc", "exit 0")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    env = plain_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = run_pipeline(*user_args(data, tmp_path / "w", backend="ascend"), env=env)
    assert_refused_before_work(proc, tmp_path / "w", "'npu-smi info' fails")


# ---------------------------------------------------------------- item 23: the work folder

def test_workdir_problems_are_one_line(data, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "images_link").symlink_to(data["images"])
    cases = {a_file: "is not a folder", a_file / "sub": "is not a folder", tmp_path / "loop": "symlink loop",
             tmp_path / "loop" / "sub": "symlink loop", data["images"]: "the same folder",
             tmp_path / "images_link": "the same folder", data["images"] / "work": "inside the image folder"}
    for workdir, message in cases.items():
        proc = run_pipeline(*user_args(data, workdir))
        assert_one_line_error(proc, 2, message)
        assert "== run_pipeline.sh" not in proc.stdout
    assert a_file.read_text() == "x\n"
    assert sorted(p.name for p in data["images"].iterdir()) == sorted(f"demo_{i:05d}.{'png' if i == 5 else 'JPEG'}"
                                                                      for i in range(1, IMAGES + 1))


def test_inputs_inside_the_outputs_are_refused(data, tmp_path):
    workdir = tmp_path / "w"
    (workdir / "prep_bin").mkdir(parents=True)
    (workdir / ".run_pipeline-settings").write_text("# made by an earlier run\n")
    for image in data["images"].iterdir():
        (workdir / "prep_bin" / image.name).symlink_to(image)
    proc = run_pipeline(*user_args(data, workdir, images=workdir / "prep_bin"))
    assert_one_line_error(proc, 2, "among the outputs this script writes")
    labels = workdir / "result" / "labels.txt"
    labels.parent.mkdir()
    labels.write_bytes(data["labels"].read_bytes())
    assert_one_line_error(run_pipeline(*user_args(data, workdir, labels=labels)), 2, "among the outputs")
    labels = workdir / "result_bs4.json"  # postprocess.py would write its result over it
    labels.write_bytes(data["labels"].read_bytes())
    assert_one_line_error(run_pipeline(*user_args(data, workdir, labels=labels)), 2, "among the outputs")
    labels.unlink()
    assert sorted(p.name for p in workdir.iterdir()) == [".run_pipeline-settings", "prep_bin", "result"]


def test_a_folder_with_files_this_script_did_not_record_is_refused(data, tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "report.md").write_text("my own notes\n")
    (workdir / "keep.txt").write_text("keep\n")
    proc = run_pipeline(*user_args(data, workdir), "--overwrite")
    assert_one_line_error(proc, 2, "already holds 'report.md'")
    assert (workdir / "report.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["keep.txt", "report.md"]


@pytest.mark.skipif(shutil.which("flock") is None, reason="no flock(1) here")
def test_a_folder_in_use_by_another_run_is_refused(data, tmp_path):
    import fcntl

    workdir = tmp_path / "busy"
    workdir.mkdir()
    fd = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running run_pipeline.sh holds
        assert_one_line_error(run_pipeline(*user_args(data, workdir)), 2, "another run of run_pipeline.sh")
    finally:
        os.close(fd)
    assert list(workdir.iterdir()) == []


@as_root
def test_read_only_workdir_is_one_line(data, tmp_path):
    workdir = tmp_path / "ro"
    workdir.mkdir()
    workdir.chmod(0o555)
    try:
        assert_one_line_error(run_pipeline(*user_args(data, workdir)), 2, "not writable")
        assert_one_line_error(run_pipeline(*user_args(data, workdir / "sub")), 2, "not writable")
    finally:
        workdir.chmod(0o755)


@as_root
def test_unreadable_checkpoint_is_one_line(data, tmp_path):
    checkpoint = tmp_path / "locked.pth"
    checkpoint.write_bytes(data["checkpoint"].read_bytes())
    checkpoint.chmod(0o000)
    proc = run_pipeline(*user_args(data, tmp_path / "w", checkpoint=checkpoint))
    assert_refused_before_work(proc, tmp_path / "w", "not readable")


# ---------------------------------------------------------------- item 20: step errors reach stderr

def test_step_one_errors_reach_stderr_as_one_line(data, tmp_path):
    proc = run_pipeline(*user_args(data, tmp_path / "w", arch="RepVGG-Z9"))
    assert_one_line_error(proc, 2, "pth2onnx.py: error: unknown RepVGG variant 'RepVGG-Z9'")
    assert 'stopped in step "1/6 pth2onnx' in proc.stdout
    assert "unknown RepVGG variant" in (tmp_path / "w" / "pth2onnx.log").read_text()  # the log is kept

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(os.urandom(4096))
    # nothing was made from the first settings yet, so another checkpoint in the same folder is fine
    proc = run_pipeline(*user_args(data, tmp_path / "w", checkpoint=corrupt))
    assert_one_line_error(proc, 2, f"pth2onnx.py: error: {corrupt}")


def test_demo_with_unknown_arch_is_one_line(tmp_path):
    proc = run_pipeline("--arch", "RepVGG-Z9", "--workdir", tmp_path / "demo")
    assert_one_line_error(proc, 2, "--arch: unknown RepVGG variant")


# ---------------------------------------------------------------- items 22 and 23: partial runs, settings, resume

def _table_rows(report: str) -> list[list[str]]:
    """The closing table's rows of the main backend (the first table; the drift runs torch/FP16 preview left out)."""
    lines = report.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[first:end]]
    return [row for row in rows[1:] if row[0] != "---" and row[1] in ("onnxruntime", "ais_bench")]


@pytest.fixture(scope="module")
def partial_run(data, tmp_path_factory) -> dict:
    """One of IMAGES images is unreadable: the run goes on with the others."""
    root = tmp_path_factory.mktemp("partial")
    images = root / "images"
    images.mkdir()
    for image in data["images"].iterdir():
        (images / image.name).write_bytes(image.read_bytes())
    (images / "demo_00002.JPEG").write_bytes(b"\xff\xd8 not really a JPEG")
    args = user_args(data, root / "w", images=images)
    return {"root": root, "workdir": root / "w", "args": args, "first": run_pipeline(*args),
            "data_images": data["images"]}


def _assert_partial(proc: subprocess.CompletedProcess, workdir: Path) -> None:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pipeline.sh: error: 1 of 8 images could not be read"), last
    assert [(r[2], r[3]) for r in _table_rows((workdir / "report.md").read_text())] == [("4", "7")]
    assert "1 of 8 images could not be read" in (workdir / "report.md").read_text()
    assert (workdir / "prep_bin" / "failed.txt").read_text().startswith("demo_00002.JPEG\t")
    assert len(list((workdir / "result" / "bs4").glob("*_0.bin"))) == 7


def test_unreadable_image_is_counted_out_and_the_run_goes_on(partial_run):
    _assert_partial(partial_run["first"], partial_run["workdir"])
    rerun = run_pipeline(*partial_run["args"])  # a rerun behaves the same
    _assert_partial(rerun, partial_run["workdir"])
    assert "0 written, 7 skipped (already done), 1 failed" in rerun.stdout


def test_other_settings_are_refused_before_anything_is_touched(partial_run):
    workdir = partial_run["workdir"]
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    record = (workdir / ".run_pipeline-settings").read_text()
    for option, value, changed in (("--input-size", "96", "input_size 64 -> 96"), ("--arch", "RepVGG-A1", "arch"),
                                   ("--images", partial_run["data_images"], "images")):
        proc = run_pipeline(*_replace(partial_run["args"], option, value))
        assert_one_line_error(proc, 2, changed)
        assert "--overwrite" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before
    assert (workdir / ".run_pipeline-settings").read_text() == record


def _replace(args: list[str], option: str, value: object) -> list[str]:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = str(value)
    else:
        args += [option, str(value)]
    return args


def test_overwrite_redoes_a_folder_of_other_settings_and_keeps_foreign_files(partial_run):
    workdir = partial_run["workdir"]
    (workdir / "prep_bin" / "my notes.txt").write_text("mine\n")
    args = _replace(_replace(partial_run["args"], "--input-size", "96"), "--batch-sizes", "2")
    proc = run_pipeline(*args, "--overwrite")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "removed the outputs of the earlier run" in proc.stdout
    assert (workdir / "prep_bin" / "my notes.txt").read_text() == "mine\n"
    assert not (workdir / "result" / "bs4").exists() and not (workdir / "result_bs4.json").exists()
    assert [(r[2], r[3]) for r in _table_rows((workdir / "report.md").read_text())] == [("2", "7")]
    assert {p.stat().st_size for p in (workdir / "prep_bin").glob("*.bin")} == {3 * 96 * 96 * 4}
    assert "input_size=96" in (workdir / ".run_pipeline-settings").read_text()


def test_ctrl_c_mid_run_then_rerun_finishes(data, tmp_path):
    workdir = tmp_path / "w"
    out = tmp_path / "stdout.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(["bash", str(SCRIPT), *user_args(data, workdir)], cwd=REPO_ROOT, env=plain_env(),
                                stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        # "fusion:" is printed inside pth2onnx's main: a Ctrl-C while an interpreter is still starting up
        # (Python's own site import) prints Python's traceback, which no script can prevent
        while "fusion:" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out.read_text()[-2000:], stderr)
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == ["pth2onnx.py: interrupted",  # the log's tee survives the Ctrl-C
                                           "run_pipeline.sh: interrupted; rerun the same command to resume"]
    assert not (workdir / "repvgg.onnx").exists()
    rerun = run_pipeline(*user_args(data, workdir))
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert [(r[2], r[3]) for r in _table_rows((workdir / "report.md").read_text())] == [("4", str(IMAGES))]


# ---------------------------------------------------------------- atc_convert.sh: the same checks before ATC runs

def test_atc_convert_bad_paths_and_values_are_one_line(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not empty")
    (tmp_path / "empty.onnx").touch()
    (tmp_path / "loop.onnx").symlink_to(tmp_path / "loop.onnx")
    a_file = tmp_path / "file"
    a_file.write_text("x\n")
    cases = [
        (["--onnx", tmp_path], "is a folder"),
        (["--onnx", tmp_path / "empty.onnx"], "is empty"),
        (["--onnx", tmp_path / "loop.onnx"], "symlink loop"),
        (["--onnx", onnx, "--output-prefix", a_file / "repvgg"], "is not a folder"),
        (["--onnx", onnx, "--output-prefix", tmp_path], "is a folder; give a path prefix"),
        (["--onnx", onnx, "--input-name", "a,b"], "--input-name"),
        (["--onnx", onnx, "--soc_version", "Ascend310;reboot"], "--soc_version"),
        (["--onnx", onnx, "--precision_mode", "force fp16"], "--precision_mode"),
    ]
    env = {k: v for k, v in plain_env().items() if not k.startswith("ATC_") and k != "SOC_VERSION"}
    for args, message in cases:
        # the stand-in atc on PATH: without one the first message is "source set_env.sh" (issue 8)
        env["PATH"] = f"{STANDINS / 'bin'}{os.pathsep}{env['PATH']}"
        proc = subprocess.run(["bash", str(ATC_SCRIPT), "--soc_version", "Ascend310P3", *map(str, args)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert_one_line_error(proc, 2, message)
    assert a_file.read_text() == "x\n"
