"""The ais_bench summary: `{output_prefix}_summary.json` (older: `sumary.json`) and its stdout block.

ASCEND_FORMATS.md §4. Our own inference runner writes the same layout, so one
reader (`parse_perf.py`, `postprocess.py` via `filesinfo`) serves both. Field names,
units (ms) and the printed lines follow ais_bench's `summary.py`: `NPU_compute_time`,
`H2D_latency`, `D2H_latency` as `{min, max, mean, median, "percentile(99%)", count}`,
`throughput = 1000 * batchsize / mean compute ms`, `npu_compute_time_list`, `pid`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail

PERCENTILE = 99
PERCENTILE_KEY = f"percentile({PERCENTILE}%)"
SUMMARY_SUFFIX = "_summary.json"
OLD_SUMMARY_NAME = "sumary.json"  # sic: what ais_bench versions before 2023 wrote
TIME_FIELDS = ("NPU_compute_time", "H2D_latency", "D2H_latency")
BANNER = "[INFO] -----------------Performance Summary------------------"
FOOTER = "[INFO] ------------------------------------------------------"


def time_stats(samples_ms: Sequence[float]) -> dict:
    """min/max/mean/median/99th percentile/count of timing samples in ms, as ais_bench records them.

    ais_bench reports zeros for an empty list (e.g. no H2D samples) rather than failing; so do we.
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, PERCENTILE_KEY: 0.0, "count": 0}
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        PERCENTILE_KEY: float(np.percentile(values, PERCENTILE)),
        "count": int(values.size),
    }


def build_summary(filesinfo: dict, args: dict, compute_ms: Sequence[float], h2d_ms: Sequence[float],
                  d2h_ms: Sequence[float], batch_size: int) -> dict:
    """The summary dict ais_bench dumps: throughput is compute-only, `1000 * batch_size / mean compute ms`."""
    compute = time_stats(compute_ms)
    throughput = 0.0 if compute["mean"] == 0 else 1000.0 * batch_size / compute["mean"]
    return {
        "filesinfo": filesinfo,
        "args": args,
        "NPU_compute_time": compute,
        "H2D_latency": time_stats(h2d_ms),
        "D2H_latency": time_stats(d2h_ms),
        "npu_compute_time_list": [float(v) for v in compute_ms],
        "throughput": throughput,
        "pid": os.getpid(),
    }


def summary_path(output_root: Path, output_dirname: str) -> Path:
    """ais_bench's place for it: `os.path.join(output, output_dirname) + "_summary.json"`.

    A sibling of the dump folder (`bs16` -> `bs16_summary.json`), or inside it when the name
    ends in a slash (`lcmout/` -> `lcmout/_summary.json`, the path ModelZoo's README reads).
    """
    return Path(os.path.join(str(output_root), output_dirname) + SUMMARY_SUFFIX)


def write_summary(path: Path, summary: dict) -> None:
    """Write the summary json atomically (compact, as ais_bench's `json.dump` does)."""
    atomic.write_text(path, json.dumps(summary))


def _stats_line(name: str, stats: Mapping[str, Any]) -> str:
    return (f"[INFO] {name} (ms): min = {stats['min']}, max = {stats['max']}, mean = {stats['mean']}, "
            f"median = {stats['median']}, {PERCENTILE_KEY} = {stats[PERCENTILE_KEY]}")


def performance_summary_lines(summary: dict, batch_size: int, display_all: bool = True) -> list[str]:
    """The "Performance Summary" block ais_bench prints (H2D and D2H lines only with --display_all_summary True)."""
    compute = summary["NPU_compute_time"]
    return [
        BANNER,
        *([_stats_line("H2D_latency", summary["H2D_latency"])] if display_all else []),
        _stats_line("NPU_compute_time", compute),
        *([_stats_line("D2H_latency", summary["D2H_latency"])] if display_all else []),
        f"[INFO] throughput 1000*batchsize.mean({batch_size})/NPU_compute_time.mean({compute['mean']}): "
        f"{summary['throughput']}",
        FOOTER,
    ]


def read_summary(path: Path) -> dict:
    """Read a summary json (ours or ais_bench's); `UserError` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise fail(f"summary file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read summary file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise fail(f"{path} is not valid json: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(data, dict):
        raise fail(f"{path} is not an ais_bench summary: expected a json object, got {type(data).__name__}")
    return data


# The throughput line of the block above; older ais_bench prints `batchsize(16)`, newer `batchsize.mean(16)`,
# msit `Throughput` with a capital T.
_THROUGHPUT_LINE = re.compile(
    r"throughput\s+1000\*batchsize(?:\.mean)?\((?P<batch>[^)]*)\)\s*/\s*NPU_compute_time\.mean\((?P<mean>[^)]*)\)"
    r"\s*:\s*(?P<value>\S+)",
    re.IGNORECASE,
)


def find_throughput_line(text: str) -> tuple[str, str, str] | None:
    """(batch size, mean compute ms, throughput) as printed on the last throughput line of an ais_bench log.

    The texts are returned unconverted so the caller can report a non-numeric one by name.
    """
    matches = list(_THROUGHPUT_LINE.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return last["batch"].strip(), last["mean"].strip(), last["value"].strip()
