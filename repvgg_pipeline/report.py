"""The closing table of `scripts/run_pipeline.sh`: model, backend, batch, top-1, top-5, throughput.

Reads each run's `result.json` (postprocess.py) and its ais_bench summary (infer.py or
the real ais_bench) through their format modules, so the table shows exactly the figures
those files hold, and prints it as a markdown table (also written to `--out`).

    python -m repvgg_pipeline.report --model repvgg.onnx --backend onnxruntime \
        --run 1 result_bs1.json result/bs1_summary.json --run 16 result_bs16.json result/bs16_summary.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail, run_cli
from repvgg_pipeline.formats.perf import card_fps, normalise_chip, read_perf
from repvgg_pipeline.formats.result import read_result


@dataclass(frozen=True)
class Row:
    """One line of the table: a model run at one batch size."""

    model: str
    backend: str
    batch: int
    top1: float | None  # fractions, None when the result file lacks them
    top5: float | None
    images: int | None
    fps: float  # per device, compute-only (ais_bench's throughput)
    card_fps: float | None


def _accuracy(result: dict, k: int) -> float | None:
    """Top-k as a fraction: from `metrics` when present, else parsed from the ModelZoo "TopK accuracy" string."""
    metrics = result.get("metrics") or {}
    if isinstance(metrics.get(f"top{k}"), int | float):
        return float(metrics[f"top{k}"])
    text = result.get("table", {}).get(f"Top{k} accuracy")
    try:
        return float(str(text).rstrip("%")) / 100.0 if text is not None else None
    except ValueError:
        return None


def build_row(model: str, backend: str, batch: int, result_file: Path, summary_file: Path,
              chip: str | None = None) -> Row:
    """Read one run's accuracy and throughput files into a row."""
    result = read_result(result_file)
    perf = read_perf(summary_file)
    images = (result.get("metrics") or {}).get("images")
    if images is None:
        count = result.get("table", {}).get("Number of images")
        images = int(count) if count is not None and str(count).isdigit() else None
    return Row(model, backend, batch, _accuracy(result, 1), _accuracy(result, 5), images, perf.per_device_fps,
               card_fps(perf.per_device_fps, chip) if chip else None)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def format_table(rows: list[Row], chip: str | None = None) -> list[str]:
    """A markdown table, one row per run."""
    header = ["model", "backend", "batch", "images", "top-1", "top-5", "throughput (img/s)"]
    if chip:
        header.append(f"{chip} card (img/s)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        cells = [row.model, row.backend, str(row.batch), "?" if row.images is None else str(row.images),
                 _percent(row.top1), _percent(row.top5), f"{row.fps:.1f}"]
        if chip:
            cells.append("n/a" if row.card_fps is None else f"{row.card_fps:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repvgg_pipeline.report",
                                     description="Print the pipeline's closing table from result.json and "
                                                 "ais_bench summary files.")
    parser.add_argument("--model", required=True, help="model name shown in the table")
    parser.add_argument("--backend", required=True, help="backend shown in the table")
    parser.add_argument("--run", nargs=3, action="append", required=True, metavar=("BATCH", "RESULT", "SUMMARY"),
                        help="one run: batch size, its result.json, its *_summary.json (repeatable)")
    parser.add_argument("--chip", help="310 or 310P: add the per-card throughput column")
    parser.add_argument("--note", action="append", default=[], help="a line printed under the table (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table (and notes) to this markdown file")
    return parser


def main(args: argparse.Namespace) -> int:
    chip = normalise_chip(args.chip) if args.chip else None
    rows = []
    for batch, result_file, summary_file in args.run:
        if not batch.isdigit() or int(batch) < 1:
            raise fail(f"--run: batch size must be a positive integer, got {batch!r}")
        rows.append(build_row(args.model, args.backend, int(batch), Path(result_file), Path(summary_file), chip))
    lines = format_table(rows, chip) + [""] * bool(args.note) + list(args.note)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        atomic.write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
