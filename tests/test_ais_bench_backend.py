"""The OM backend against each ais_bench generation users still run, through stand-ins built from the real source.

"2023" is tools commit 9d6da90 (sumary(), float exec_time_list, get_H2D_time_list spelling, no
free_resource); "2025" the current line (summary(), (start, end) pairs, get_h2d_time_list,
free_resource + static finalize, path checks). The first OM backend crashed on the first batch
with both: `float(times[-1])` on a pair (TypeError) and `get_h2d_time_list` on 2023
(AttributeError). `test_runs_and_reports_times` is the test that catches both.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from repvgg_pipeline.cli import UserError
from tests.conftest import REPO_ROOT, STANDINS, assert_one_line_error, run_script

GENERATIONS = {"2023": [STANDINS / "gen2023", STANDINS], "2025": [STANDINS]}
SIZE, CLASSES, BATCH, COUNT = 8, 5, 4, 10


def _purge_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("ais_bench", "aclruntime", "acl_standin", "repvgg_pipeline"):
            if name.split(".")[0] == "repvgg_pipeline" and not name.startswith("repvgg_pipeline.backends.ais_bench"):
                continue
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(params=sorted(GENERATIONS))
def generation(request, monkeypatch):
    """Put one generation's ais_bench + aclruntime stand-ins on sys.path; yield (name, aclruntime module)."""
    _purge_modules()
    for path in reversed(GENERATIONS[request.param]):
        monkeypatch.syspath_prepend(str(path))
    aclruntime = importlib.import_module("aclruntime")
    assert request.param == aclruntime.GENERATION
    yield request.param, aclruntime
    _purge_modules()


def _onnx_model(path: Path, batch: int | str) -> np.ndarray:
    """Global average pool + a linear layer: input float32 (batch,3,SIZE,SIZE) -> (batch, CLASSES). Returns W."""
    weights = np.random.default_rng(1).standard_normal((3, CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["actual_input_1"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["output1"])],
        "tiny", [helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, [batch, CLASSES])],
        [helper.make_tensor("W", TensorProto.FLOAT, [3, CLASSES], weights.ravel().tolist())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return weights


def _expected(batch: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return batch.mean(axis=(2, 3)) @ weights


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A static batch-4 stand-in OM (what atc writes for --input_shape ...:4,...), a dynamic-batch one, inputs."""
    root = tmp_path_factory.mktemp("om")
    weights = _onnx_model(root / "static_bs4.om", BATCH)
    _onnx_model(root / "dynamic.om", "-1")
    _onnx_model(root / "tiny.onnx", "-1")
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((COUNT, 3, SIZE, SIZE)).astype(np.float32)
    (root / "bins").mkdir()
    for i, tensor in enumerate(inputs):
        tensor.tofile(root / "bins" / f"img{i}.bin")
    return {"root": root, "weights": weights, "inputs": inputs, "static": root / "static_bs4.om",
            "dynamic": root / "dynamic.om", "onnx": root / "tiny.onnx"}


def _backend(path: Path):
    from repvgg_pipeline.backends.ais_bench import AisBenchBackend

    return AisBenchBackend(path, device=0)


# ---------------------------------------------------------------- the stand-ins model each generation

def test_standin_records_each_generations_types(generation, models):
    name, aclruntime = generation
    from ais_bench.infer.interface import InferSession, MemorySummary

    session = InferSession(0, str(models["static"]))
    raw = models["inputs"][:BATCH].view(np.int8).reshape(-1)  # the CLI's int8 view of the file bytes
    out = session.infer([raw])[0]
    np.testing.assert_allclose(out, _expected(models["inputs"][:BATCH], models["weights"]), rtol=1e-5, atol=1e-6)
    times = (session.sumary() if name == "2023" else session.summary()).exec_time_list
    assert len(times) == 1
    if name == "2023":
        assert isinstance(times[0], float) and not hasattr(session, "summary")
        assert hasattr(MemorySummary, "get_H2D_time_list") and not hasattr(MemorySummary, "get_h2d_time_list")
        assert not hasattr(session, "free_resource")
    else:
        assert isinstance(times[0], tuple) and len(times[0]) == 2 and times[0][1] >= times[0][0]
        assert hasattr(MemorySummary, "get_h2d_time_list") and not hasattr(MemorySummary, "get_H2D_time_list")
        assert not hasattr(session, "sumary")
    with pytest.raises(RuntimeError, match="input size"):  # bytes of another size than the model's input
        session.infer([models["inputs"][:2].copy()])


def test_standin_loop_copies_once_and_executes_n_times(generation, models):
    name, aclruntime = generation
    from ais_bench.infer import interface

    session = interface.InferSession(0, str(models["static"]), loop=3)
    interface.MemorySummary.reset()
    session.infer([models["inputs"][:BATCH].copy()])
    times = (session.sumary() if name == "2023" else session.summary()).exec_time_list
    h2d = (interface.MemorySummary.get_H2D_time_list() if name == "2023"
           else interface.MemorySummary.get_h2d_time_list())
    assert len(times) == 3 and len(h2d) == 1


def test_standin_2025_refuses_paths_as_ais_bench(tmp_path, models, monkeypatch):
    _purge_modules()
    monkeypatch.syspath_prepend(str(STANDINS))
    from ais_bench.infer.interface import InferSession

    odd = tmp_path / "my model.om"
    odd.write_bytes(models["static"].read_bytes())
    link = tmp_path / "link.om"
    link.symlink_to(models["static"])
    shared = tmp_path / "shared.om"
    shared.write_bytes(models["static"].read_bytes())
    shared.chmod(0o664)
    for bad in (odd, link, shared, models["onnx"]):
        with pytest.raises(ValueError):
            InferSession(0, str(bad))
    _purge_modules()


# ---------------------------------------------------------------- the backend with each generation

def test_runs_and_reports_times(generation, models):
    """The first batch of a run: the check that the first OM backend failed with every release."""
    backend = _backend(models["static"])
    assert backend.input.batch == BATCH and backend.output_names == ["output1"]
    for start in (0, BATCH):
        batch = models["inputs"][start:start + BATCH].copy()
        (out,), timing = backend.run(batch)
        np.testing.assert_allclose(out, _expected(batch, models["weights"]), rtol=1e-5, atol=1e-6)
        assert isinstance(timing.compute_ms, float) and 0 < timing.compute_ms < 10_000
        assert len(timing.h2d_ms) == 1 and len(timing.d2h_ms) == 1  # this batch's copies only
    backend.close()
    assert backend.session is None


def test_dynamic_batch_model(generation, models):
    backend = _backend(models["dynamic"])
    assert backend.input.batch is None
    for size in (3, 1):
        batch = models["inputs"][:size].copy()
        (out,), _ = backend.run(batch)
        np.testing.assert_allclose(out, _expected(batch, models["weights"]), rtol=1e-5, atol=1e-6)
    backend.close()


def test_cost_per_batch_is_constant(generation, models):
    """The pybind lists are copied whole on each read: reading then resetting keeps that copy at one batch's."""
    _, aclruntime = generation
    backend = _backend(models["static"])
    batch = models["inputs"][:BATCH].copy()
    aclruntime_reads = sys.modules["acl_standin"].STANDIN_READS
    copied = []
    for _ in range(60):
        before = aclruntime_reads["elements_copied"]
        backend.run(batch)
        copied.append(aclruntime_reads["elements_copied"] - before)
    backend.close()
    assert max(copied) == min(copied) <= 3  # one exec time, one H2D, one D2H sample per batch, however long the run


def test_close_frees_then_finalizes(generation, models, monkeypatch):
    name, aclruntime = generation
    calls = []
    backend = _backend(models["static"])
    session = backend.session
    if name == "2025":
        monkeypatch.setattr(session, "free_resource", lambda: calls.append("free_resource"))
        monkeypatch.setattr(aclruntime.InferenceSession, "finalize", staticmethod(lambda: calls.append("finalize")))
        expected = ["free_resource", "finalize"]
    else:
        monkeypatch.setattr(session.session, "finalize", lambda: calls.append("finalize"))
        expected = ["finalize"]
    backend.close()
    backend.close()  # twice is harmless
    assert calls == expected


def test_missing_api_is_one_line_naming_the_version(generation, models, monkeypatch):
    name, _ = generation
    from ais_bench.infer import interface

    monkeypatch.delattr(interface.InferSession, "sumary" if name == "2023" else "summary")
    with pytest.raises(UserError, match=r"ais_bench 0\.0\.2, aclruntime 0\.0\.2.*summary\(\) nor sumary\(\)"):
        _backend(models["static"])


def test_unrelated_ais_bench_package_is_named(models, monkeypatch):
    _purge_modules()
    monkeypatch.syspath_prepend(str(STANDINS / "wrong_package"))
    with pytest.raises(UserError, match=r"ais-bench-benchmark .*LLM evaluation.*tools repository"):
        _backend(models["static"])
    _purge_modules()


def test_missing_ais_bench_says_where_it_comes_from(models, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = run_script("infer.py", models["static"], models["root"] / "bins", tmp_path / "out", env=env)
    assert_one_line_error(proc, 2, "tools repository")
    assert "aclruntime" in proc.stderr and "set_env.sh" in proc.stderr


# ---------------------------------------------------------------- paths the real CLI would refuse

def test_paths_ais_bench_refuses_are_refused_up_front(models, tmp_path):
    from repvgg_pipeline.backends.ais_bench import check_paths

    odd = tmp_path / "a b"
    odd.mkdir()
    with pytest.raises(UserError, match="holds ' '"):
        check_paths(model=odd / "m.om")
    link = tmp_path / "link.om"
    link.symlink_to(models["static"])
    with pytest.raises(UserError, match="symbolic link"):
        check_paths(model=link)
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    wide.chmod(0o755)
    with pytest.raises(UserError, match="above 750"):
        check_paths(output_root=wide)
    shared_in = tmp_path / "shared_in"
    shared_in.mkdir()
    shared_in.chmod(0o775)
    with pytest.raises(UserError, match="group- or other-writable"):
        check_paths(inputs=shared_in)
    wide.chmod(0o750)
    check_paths(model=models["static"], inputs=models["root"] / "bins", output_root=wide)  # all fine


# ---------------------------------------------------------------- infer.py end to end, per generation

def _env(name: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, GENERATIONS[name]), str(REPO_ROOT)])
    return env


def test_infer_py_writes_what_ais_bench_writes(generation, models, tmp_path):
    """A ModelZoo command line with `python3 -m ais_bench` replaced by `python infer.py`."""
    name, _ = generation
    out = tmp_path / "result"
    proc = run_script("infer.py", "--model", models["static"], "--input", models["root"] / "bins", "--output", out,
                      "--output_dirname", "lcmout/", "--outfmt", "BIN", "--warmup_count", "2", "--loop", "1",
                      "--device", "0", "--display_all_summary", "True", env=_env(name))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "lcmout" / "_summary.json").read_text())  # where ModelZoo's README reads it
    assert summary["NPU_compute_time"]["count"] == 3 and summary["H2D_latency"]["count"] == 3
    assert "H2D_latency (ms)" in proc.stdout
    got = np.stack([np.fromfile(out / "lcmout" / f"img{i}_0.bin", dtype=np.float32) for i in range(COUNT)])
    np.testing.assert_allclose(got, _expected(models["inputs"], models["weights"]), rtol=1e-5, atol=1e-6)
    for folder in (out, out / "lcmout"):  # what the real CLI creates and accepts: at most rwxr-x---
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    quiet = run_script("infer.py", "-m", models["static"], "--loop", "3", "--pure_data_type", "zero",
                       "--display_all_summary", "False", env=_env(name))
    assert quiet.returncode == 0, quiet.stderr
    assert "H2D_latency" not in quiet.stdout and "12 zero inputs in 3 batches of 4" in quiet.stdout


def test_infer_py_refuses_an_output_folder_ais_bench_would_refuse(models, tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    out.chmod(0o755)
    proc = run_script("infer.py", models["static"], models["root"] / "bins", out, env=_env("2025"))
    assert_one_line_error(proc, 2, "above 750")


def test_named_and_positional_forms_must_agree(models, tmp_path):
    proc = run_script("infer.py", models["static"], "--model", models["dynamic"], "--loop", "2", env=_env("2025"))
    assert_one_line_error(proc, 2, "model given twice")
