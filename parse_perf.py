"""Throughput of an inference run, per device and per 310/310P card, from any Ascend tool's perf output.

    python parse_perf.py perf.txt 310P
    python parse_perf.py result/perf_vision_batchsize_16_device_0.txt 310
    python parse_perf.py result/bs1_summary.json result/bs16_summary.json --chip 310P3 --json

Reads the old benchmark perf file, its PureInfer file, an ais_bench summary json (also
`sumary.json` and infer.py's own), or an ais_bench stdout log, telling them apart by content.
An Ascend 310 card has four chips (card = per-device rate x 4), a 310P card one (x 1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from repvgg_pipeline.cli import fail, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these imports into one line
from repvgg_pipeline.formats.perf import DEVICES_PER_CARD, PerfRecord, card_fps, normalise_chip, read_perf

# what a chip name looks like (310, 310P3, 910B, Ascend910B4): a trailing word of this shape that is not
# an existing file is meant as the chip, so an unsupported one is reported as such, not as a missing file
_CHIP_LIKE = re.compile(r"(ascend)?\d{3}[a-z]?\d?", re.IGNORECASE)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parse_perf.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help="perf files, optionally followed by the chip as in ModelZoo: perf.txt 310P")
    parser.add_argument("--chip", help="310 (x4 chips per card), 310P or 310P3 (x1); default: per-device figure")
    parser.add_argument("--json", action="store_true", help="print a machine-readable record (a list for several)")
    return parser


def split_chip(inputs: list[str], chip_option: str | None) -> tuple[list[Path], str | None]:
    """Separate the ModelZoo trailing chip argument (`perf.txt 310P`) from the file names."""
    files, chip = list(inputs), chip_option
    last = files[-1]
    if len(files) == 1 and not Path(last).exists() and _CHIP_LIKE.fullmatch(last.strip()):
        raise fail(f"no perf file given ({last} looks like a chip: parse_perf.py PERF_FILE {last})")
    if len(files) > 1 and not Path(last).exists() and _CHIP_LIKE.fullmatch(last.strip()):
        if last.strip().upper().removeprefix("ASCEND") not in DEVICES_PER_CARD:
            raise fail(f"unknown chip {last!r} (nor is it a file); expected one of {', '.join(DEVICES_PER_CARD)}")
        if chip is not None and normalise_chip(chip) != normalise_chip(last):
            raise fail(f"two different chips given: {last} and --chip {chip}")
        chip = files.pop()
    if not files:
        raise fail("no perf file given")
    return [Path(f) for f in files], (normalise_chip(chip) if chip is not None else None)


def fps_text(value: float) -> str:
    """At most three decimals, trailing zeros dropped: 2453.404, 8752.3."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def batch_text(record: PerfRecord) -> str:
    return f"bs{record.batch_size}" if record.batch_size else "bs?"


def as_json(record: PerfRecord, chip: str | None) -> dict:
    entry = record.as_dict()
    entry["chip"] = chip
    entry["devices_per_card"] = DEVICES_PER_CARD[chip] if chip else None
    entry["card_fps"] = card_fps(record.per_device_fps, chip) if chip else None
    return entry


def one_line(record: PerfRecord, chip: str | None) -> str:
    if chip is None:
        return f"{batch_text(record)}: {fps_text(record.per_device_fps)} fps per device"
    return (f"{chip} {batch_text(record)}: {fps_text(card_fps(record.per_device_fps, chip))} fps "
            f"(per device {fps_text(record.per_device_fps)})")


def table(records: list[PerfRecord], chip: str | None) -> list[str]:
    header = ["file", "format", "batch", "per device fps"] + ([f"{chip} card fps"] if chip else [])
    rows = [[r.source, r.format, str(r.batch_size or "?"), fps_text(r.per_device_fps)]
            + ([fps_text(card_fps(r.per_device_fps, chip))] if chip else []) for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3, 4}
    return ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in
                      enumerate(zip(row, widths, strict=True))).rstrip() for row in [header, *rows]]


def main(args: argparse.Namespace) -> int:
    files, chip = split_chip(args.inputs, args.chip)
    records = [read_perf(path) for path in files]
    if args.json:
        entries = [as_json(r, chip) for r in records]
        print(json.dumps(entries[0] if len(entries) == 1 else entries, indent=1))
    elif len(records) == 1:
        print(one_line(records[0], chip))
    else:
        print("\n".join(table(records, chip)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
