"""ais_bench summary json and its printed block: the fields, the arithmetic and the exact text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats.summary import (
    build_summary,
    find_throughput_line,
    performance_summary_lines,
    read_summary,
    summary_path,
    time_stats,
    write_summary,
)


def test_time_stats_match_numpy_and_ais_bench_keys():
    samples = [2.0, 1.0, 4.0, 3.0]
    stats = time_stats(samples)
    assert stats == {"min": 1.0, "max": 4.0, "mean": 2.5, "median": 2.5,
                     "percentile(99%)": float(np.percentile(samples, 99)), "count": 4}
    assert time_stats([])["count"] == 0 and time_stats([])["mean"] == 0.0


def test_build_write_read_summary(tmp_path):
    filesinfo = {"0": {"infiles": ["prep/a.bin"], "outfiles": ["out/bs16/a_0.bin"]}}
    summary = build_summary(filesinfo, {"batchsize": 16}, [1.6, 2.0, 2.4], [0.3], [0.1, 0.2], 16)
    assert summary["throughput"] == pytest.approx(1000 * 16 / 2.0)
    assert summary["NPU_compute_time"]["count"] == 3 and summary["D2H_latency"]["mean"] == pytest.approx(0.15)
    assert summary["npu_compute_time_list"] == [1.6, 2.0, 2.4] and isinstance(summary["pid"], int)
    path = summary_path(tmp_path, "bs16")
    assert path == tmp_path / "bs16_summary.json"
    write_summary(path, summary)
    assert read_summary(path) == json.loads(json.dumps(summary))


def test_performance_summary_text():
    summary = build_summary({}, {}, [0.661], [0.05], [0.02], 1)
    lines = performance_summary_lines(summary, 1)
    assert lines[0] == "[INFO] -----------------Performance Summary------------------"
    assert lines[2] == ("[INFO] NPU_compute_time (ms): min = 0.661, max = 0.661, mean = 0.661, median = 0.661, "
                        "percentile(99%) = 0.661")
    assert lines[-2] == f"[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.661): {1000 / 0.661}"
    assert lines[-1] == "[INFO] ------------------------------------------------------"
    assert find_throughput_line("\n".join(lines)) == ("1", "0.661", str(1000 / 0.661))


@pytest.mark.parametrize("line", [
    "[INFO] throughput 1000*batchsize(16)/NPU_compute_time.mean(1.828): 8752.735",  # older ais_bench
    "[INFO] throughput 1000*batchsize.mean(16)/NPU_compute_time.mean(1.828): 8752.735",
    "2024-01-01 [INFO] Throughput 1000*batchsize.mean(16.0)/NPU_compute_time.mean(1.828): 8752.735",  # msit
])
def test_throughput_line_variants(line):
    batch, mean, value = find_throughput_line(f"noise\n{line}\nmore noise\n")
    assert float(batch) == 16 and mean == "1.828" and value == "8752.735"


def test_read_summary_errors(tmp_path):
    bad = tmp_path / "x_summary.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid json"):
        read_summary(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a json object"):
        read_summary(bad)
    with pytest.raises(UserError, match="not found"):
        read_summary(tmp_path / "missing.json")
