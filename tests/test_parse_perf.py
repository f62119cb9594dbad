"""parse_perf.py: every perf format written from the same figure reads back to it; 310 x4, 310P x1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats import perf, summary
from tests.conftest import assert_one_line_error, run_script

COMPUTE_MS = [1.828, 1.830, 1.826]  # mean 1.828 ms for a batch of 16
FPS_16 = 1000 * 16 / (sum(COMPUTE_MS) / 3)


def write_all_formats(folder: Path, fps: float, batch: int) -> dict[str, Path]:
    """One file per format, all saying `fps` per device at batch size `batch`, in a folder with underscores."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["benchmark"] = folder / perf.benchmark_perf_name(batch)
    perf.write_benchmark_perf(files["benchmark"], fps, fps / 7)
    files["benchmark_inference"] = folder / "run_2" / perf.benchmark_perf_name(batch, device=3)
    files["benchmark_inference"].parent.mkdir()
    perf.write_benchmark_perf(files["benchmark_inference"], fps, fps / 7, infer_label="inference")
    files["pureinfer"] = folder / perf.pureinfer_perf_name(f"repvgg_a0_bs{batch}")
    perf.write_pureinfer_perf(files["pureinfer"], fps, 1000 / fps)
    compute_ms = [1000 * batch / fps] * 3
    record = summary.build_summary({}, ["/x/ais_bench/__main__.py", "--model", "m.om", "--batchsize", str(batch)],
                                   compute_ms, [0.2], [0.1], batch)
    files["ais_bench_summary"] = summary.summary_path(folder, "2026_11_22-05_00_00")
    summary.write_summary(files["ais_bench_summary"], record)
    files["old_sumary"] = folder / "x" / "sumary.json"  # old name, args with --batchsize=N
    files["old_sumary"].parent.mkdir()
    record_old = dict(record, args=["ais_bench", f"--batchsize={batch}"])
    summary.write_summary(files["old_sumary"], record_old)
    files["runner_summary"] = folder / "ours.json"  # infer.py: args as a dict
    summary.write_summary(files["runner_summary"], dict(record, args={"batchsize": batch, "model": "m.onnx"}))
    files["ais_bench_log"] = folder / "ais_bench.log"
    files["ais_bench_log"].write_text("[INFO] loading model\n" + "\n".join(summary.performance_summary_lines(
        record, batch)) + "\n")
    return files


def test_modelzoo_example_310_card(tmp_path):
    path = tmp_path / "perf_vision_batchsize_1_device_0.txt"
    path.write_text("[e2e] throughputRate: 91.4496, latency: 546749\n"
                    "[data read] throughputRate: 93.3472, moduleLatency: 10.7127\n"
                    "[preprocess] throughputRate: 93.1453, moduleLatency: 10.7359\n"
                    "[infer] throughputRate: 91.6487, Interface throughputRate: 613.351, moduleLatency: 10.2022\n"
                    "[post] throughputRate: 91.6486, moduleLatency: 10.9112\n")
    proc = run_script("parse_perf.py", path, "310")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "310 bs1: 2453.404 fps (per device 613.351)"
    assert perf.card_fps(613.351, "310") == pytest.approx(2453.404)


@pytest.mark.parametrize("kind", ["benchmark", "benchmark_inference", "pureinfer", "ais_bench_summary",
                                  "old_sumary", "runner_summary", "ais_bench_log"])
def test_every_format_reads_back_the_same_figure(tmp_path, kind):
    files = write_all_formats(tmp_path / "my_run_dir_bs_x", FPS_16, 16)
    record = perf.read_perf(files[kind])
    assert record.per_device_fps == pytest.approx(FPS_16, rel=1e-6)
    assert record.batch_size == 16


def test_format_is_told_by_content_not_name(tmp_path):
    files = write_all_formats(tmp_path, 500.0, 4)
    renamed = {}
    for kind, path in files.items():
        renamed[kind] = tmp_path / f"{kind}.dat"
        renamed[kind].write_bytes(path.read_bytes())
    assert perf.read_perf(renamed["benchmark"]).format == perf.BENCHMARK
    assert perf.read_perf(renamed["pureinfer"]).format == perf.PUREINFER
    assert perf.read_perf(renamed["ais_bench_log"]).format == perf.AIS_BENCH_LOG
    assert perf.read_perf(renamed["ais_bench_log"]).batch_size == 4  # from the log line itself
    assert perf.read_perf(renamed["ais_bench_summary"]).format == perf.AIS_BENCH_SUMMARY
    assert perf.read_perf(renamed["benchmark"]).batch_size is None  # no batch in the content or the name


def test_batch_size_from_name_ignores_underscores_in_folders(tmp_path):
    path = tmp_path / "bench_data_2024_01" / "perf_vision_batchsize_32_device_1.txt"
    path.parent.mkdir()
    perf.write_benchmark_perf(path, 1000.0, 100.0)
    record = perf.read_perf(path)
    assert (record.batch_size, record.batch_size_from) == (32, "file name")


@pytest.mark.parametrize(("chip", "factor"), [("310", 4), ("310P", 1), ("310P3", 1), ("Ascend310P3", 1)])
def test_chip_factor_on_command_line(tmp_path, chip, factor):
    path = tmp_path / "bs16_summary.json"
    record = summary.build_summary({}, ["ais_bench"], COMPUTE_MS, [], [], 16)
    summary.write_summary(path, record)
    proc = run_script("parse_perf.py", path, chip, "--json")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)
    assert entry["batch_size"] == 16 and entry["batch_size_from"] == "file name"
    assert entry["per_device_fps"] == pytest.approx(FPS_16)
    assert entry["card_fps"] == pytest.approx(FPS_16 * factor) and entry["devices_per_card"] == factor


def test_one_line_without_chip_and_table(tmp_path):
    files = write_all_formats(tmp_path, 8752.3, 16)
    proc = run_script("parse_perf.py", files["pureinfer"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "bs16: 8752.3 fps per device"
    proc = run_script("parse_perf.py", files["pureinfer"], "--chip", "310P")
    assert proc.stdout.strip() == "310P bs16: 8752.3 fps (per device 8752.3)"
    proc = run_script("parse_perf.py", files["benchmark"], files["ais_bench_log"], "310")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and "310 card fps" in lines[0]
    assert all(line.split()[-2:] == ["8752.3", "35009.2"] for line in lines[1:])
    proc = run_script("parse_perf.py", files["benchmark"], files["pureinfer"], "--json")
    assert [e["per_device_fps"] for e in json.loads(proc.stdout)] == [8752.3, 8752.3]


def test_bad_input_is_one_line_exit_2(tmp_path):
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\nworld\n")
    assert_one_line_error(run_script("parse_perf.py", unknown, "310P"), 2, contains="unknown format")
    no_figure = tmp_path / "log.txt"
    no_figure.write_text("[INFO] throughput will be printed later\n")
    assert_one_line_error(run_script("parse_perf.py", no_figure), 2, contains="no throughput")
    non_numeric = tmp_path / "perf_vision_batchsize_1_device_0.txt"
    non_numeric.write_text("[infer] throughputRate: 9, Interface throughputRate: abc, moduleLatency: 1\n")
    assert_one_line_error(run_script("parse_perf.py", non_numeric, "310"), 2, contains="non-numeric")
    bad_json = tmp_path / "x_summary.json"
    bad_json.write_text('{"throughput": "fast"}')
    assert_one_line_error(run_script("parse_perf.py", bad_json), 2, contains="non-numeric")
    bad_json.write_text('{"throughput": 0}')
    assert_one_line_error(run_script("parse_perf.py", bad_json), 2, contains="no usable throughput")
    bad_json.write_text('{"throughput": ')
    assert_one_line_error(run_script("parse_perf.py", bad_json), 2, contains="not valid json")
    assert_one_line_error(run_script("parse_perf.py", tmp_path / "missing.txt"), 2, contains="not found")
    assert_one_line_error(run_script("parse_perf.py", non_numeric, "--chip", "910B"), 2, contains="unknown chip")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(run_script("parse_perf.py", empty), 2, contains="empty")


def test_normalise_chip():
    assert perf.normalise_chip("310p3") == "310P3"
    with pytest.raises(UserError):
        perf.normalise_chip("910")
