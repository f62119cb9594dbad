"""Throughput files of the Ascend tools, recognised by their content, and the 310/310P card arithmetic.

ASCEND_FORMATS.md §3 and §4. What `parse_perf.py` reads:

- the old `benchmark` tool's `perf_vision_batchsize_{B}_device_{D}.txt`: an `[infer]` (or
  `[inference]`) line with `Interface throughputRate: X` (read and written here);
- its pure-inference file `PureInfer_perf_of_{om}_in_device_{D}.txt`:
  `ave_throughputRate = Xsamples/s, ave_latency = Yms` (read and written here);
- an ais_bench summary json (`*_summary.json`, older `sumary.json`) or infer.py's own, which has
  the same layout (format module: `summary.py`);
- an ais_bench stdout log with its `throughput 1000*batchsize...: X` line (format module: `summary.py`).

Every figure is a per-device (per-chip) rate in samples per second. An Ascend 310 card
carries four chips, a 310P card one, so the card figure is the per-device rate x 4 or x 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail
from repvgg_pipeline.formats import summary as summary_format

DEVICES_PER_CARD = {"310": 4, "310P": 1, "310P3": 1}

BENCHMARK = "benchmark perf"
PUREINFER = "benchmark PureInfer"
AIS_BENCH_SUMMARY = "ais_bench summary"
AIS_BENCH_LOG = "ais_bench log"

_INFER_LINE = re.compile(r"^\s*\[(?:infer|inference)\][^\n]*?Interface throughputRate:\s*(?P<value>[^,\s]+)",
                         re.IGNORECASE | re.MULTILINE)
_PUREINFER = re.compile(r"ave_throughputRate\s*[=:]\s*(?P<value>[^\s,]+?)\s*samples/s", re.IGNORECASE)
_BATCH_IN_NAME = (re.compile(r"batch_?size[_-]?(\d+)", re.IGNORECASE), re.compile(r"(?<![a-z])bs[_-]?(\d+)",
                                                                                   re.IGNORECASE))
_BATCH_FLAGS = ("--batchsize", "--batch-size", "--batch_size")
_MODEL_FLAGS = ("--model", "-m", "--om-model", "--om_model")


@dataclass(frozen=True)
class PerfRecord:
    """One throughput figure: per-device samples/s, where it came from, and the batch size if known."""

    source: str
    format: str
    per_device_fps: float
    batch_size: int | None
    batch_size_from: str  # "content", "file name" or "unknown"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_chip(chip: str) -> str:
    """`310`, `310P`, `310p3`, `Ascend310P3` -> the key of DEVICES_PER_CARD; UserError for anything else."""
    key = chip.strip().upper()
    key = key[len("ASCEND"):] if key.startswith("ASCEND") else key
    if key not in DEVICES_PER_CARD:
        raise fail(f"unknown chip {chip!r}; expected one of {', '.join(DEVICES_PER_CARD)}")
    return key


def card_fps(per_device_fps: float, chip: str) -> float:
    """Card throughput: per-device rate x the number of chips on one card of `chip`."""
    return per_device_fps * DEVICES_PER_CARD[normalise_chip(chip)]


def _number(text: Any, what: str, path: Path) -> float:
    if isinstance(text, bool):
        raise fail(f"{path}: non-numeric {what} {text!r}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise fail(f"{path}: non-numeric {what} {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise fail(f"{path}: no usable {what} ({text!r})")
    return value


def batch_from_name(path: Path) -> int | None:
    """Batch size from `perf_vision_batchsize_16_device_0.txt`, `bs16_summary.json` or a `bs16/` folder.

    Only the file's own name (then its folder's) is searched, so underscores elsewhere in the path do not matter.
    """
    for name in (path.name, path.parent.name):
        for pattern in _BATCH_IN_NAME:
            if match := pattern.search(name):
                return int(match.group(1))
    return None


def _batch_from_args(args: Any) -> tuple[int | None, str | None]:
    """(batch size, model path) from a summary's `args`: ais_bench stores `sys.argv`, infer.py a dict."""
    if isinstance(args, dict):
        batch = next((args[k] for k in ("batchsize", "batch_size", "batch-size") if args.get(k) is not None), None)
        model = next((args[k] for k in ("model", "om", "om_model") if args.get(k)), None)
    elif isinstance(args, list):
        words = [str(a) for a in args]
        batch = model = None
        for i, word in enumerate(words):
            flag, eq, value = word.partition("=")
            if not eq:
                value = words[i + 1] if i + 1 < len(words) else ""
            if flag in _BATCH_FLAGS:
                batch = value
            elif flag in _MODEL_FLAGS:
                model = value
    else:
        return None, None
    try:
        number = float(batch) if batch is not None else None
    except (TypeError, ValueError):
        number = None
    return (int(number) if number and number == int(number) and number > 0 else None), model and str(model)


def _from_summary(path: Path) -> PerfRecord:
    data = summary_format.read_summary(path)
    if "throughput" not in data:
        raise fail(f"{path}: summary json has no 'throughput'")
    fps = _number(data["throughput"], "throughput", path)
    batch, model = _batch_from_args(data.get("args"))
    where = "content"
    if batch is None and model:
        batch = batch_from_name(Path(model))
    if batch is None:
        batch, where = batch_from_name(path), "file name"
    return PerfRecord(str(path), AIS_BENCH_SUMMARY, fps, batch, where if batch else "unknown")


def read_perf(path: Path) -> PerfRecord:
    """Read one throughput file of any supported kind, telling the kind from the content, not the name."""
    path = Path(path)
    if not path.is_file():
        raise fail(f"perf file not found: {path}" if not path.exists() else f"perf file {path} is not a regular file")
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        raise fail(f"cannot read {path}: {err}") from None
    if not text.strip():
        raise fail(f"{path}: empty file")
    if text.lstrip().startswith("{"):
        return _from_summary(path)
    by_name = batch_from_name(path)
    name_source = "file name" if by_name else "unknown"
    if match := _INFER_LINE.search(text):
        return PerfRecord(str(path), BENCHMARK, _number(match["value"], "Interface throughputRate", path),
                          by_name, name_source)
    if match := _PUREINFER.search(text):
        return PerfRecord(str(path), PUREINFER, _number(match["value"], "ave_throughputRate", path),
                          by_name, name_source)
    if found := summary_format.find_throughput_line(text):
        batch_text, _, value = found
        fps = _number(value, "throughput", path)
        try:
            batch_value = float(batch_text)
        except ValueError:
            batch_value = 0.0
        if batch_value > 0 and batch_value == int(batch_value):
            return PerfRecord(str(path), AIS_BENCH_LOG, fps, int(batch_value), "content")
        return PerfRecord(str(path), AIS_BENCH_LOG, fps, by_name, name_source)
    if "throughputrate" in text.lower() or "throughput" in text.lower():
        raise fail(f"{path}: no throughput figure found (no '[infer] ... Interface throughputRate: X', "
                   f"'ave_throughputRate = X samples/s' or ais_bench 'throughput 1000*batchsize...: X' line)")
    raise fail(f"{path}: unknown format (not a benchmark perf file, PureInfer file, ais_bench summary json or log)")


# ---------------------------------------------------------------- writing (tests, tool stand-ins)

def benchmark_perf_name(batch_size: int, device: int = 0) -> str:
    """The old benchmark tool's perf file name."""
    return f"perf_vision_batchsize_{batch_size}_device_{device}.txt"


def pureinfer_perf_name(om_stem: str, device: int = 0) -> str:
    """The old benchmark tool's pure-inference perf file name."""
    return f"PureInfer_perf_of_{om_stem}_in_device_{device}.txt"


def _text(value: float) -> str:
    """A figure as the tools print it: shortest exact decimal, no exponent for usual magnitudes."""
    return repr(round(float(value), 6))


def write_benchmark_perf(path: Path, interface_fps: float, e2e_fps: float, infer_label: str = "infer") -> None:
    """The five-line perf file of the old benchmark tool; `infer_label` is `infer` or `inference` (versions differ)."""
    post = "post" if infer_label == "infer" else "postprocess"
    latency_ms = 1000.0 / e2e_fps
    lines = [
        f"[e2e] throughputRate: {_text(e2e_fps)}, latency: {_text(1e6 / e2e_fps)}",
        f"[data read] throughputRate: {_text(e2e_fps)}, moduleLatency: {_text(latency_ms)}",
        f"[preprocess] throughputRate: {_text(e2e_fps)}, moduleLatency: {_text(latency_ms)}",
        f"[{infer_label}] throughputRate: {_text(e2e_fps)}, Interface throughputRate: {_text(interface_fps)}, "
        f"moduleLatency: {_text(1000.0 / interface_fps)}",
        f"[{post}] throughputRate: {_text(e2e_fps)}, moduleLatency: {_text(latency_ms)}",
    ]
    atomic.write_text(path, "\n".join(lines) + "\n")


def write_pureinfer_perf(path: Path, fps: float, latency_ms: float) -> None:
    """The old benchmark tool's pure-inference perf line."""
    atomic.write_text(path, f"ave_throughputRate = {_text(fps)}samples/s, ave_latency = {_text(latency_ms)}ms\n")
