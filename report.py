"""The report of a pipeline run: WORKDIR/report.html (tables and plots, one file that opens offline) and report.md.

    python report.py demo_out
    python report.py work_dir --checkpoint RepVGG-A0-train.pth --chip 310P

Reads the run's own files (result/*_summary.json, result_*.json, batch_agreement.json,
drift.json) through their format modules, so every figure equals the one in those files,
and puts the published RepVGG-A0 figures beside ours, marked as measured on other hardware.
Prints the closing table (model, backend, batch, top-1, top-5, throughput).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repvgg_pipeline.cli import run_cli
from repvgg_pipeline.report import format_table
from repvgg_pipeline.report_html import closing_rows, collect, write_report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, help="the pipeline's work folder (holds result/ and result_*.json)")
    parser.add_argument("--checkpoint", type=Path,
                        help="the .pth the model came from: sha256, official release, variant "
                             "(default: the one .pth in WORKDIR, if there is exactly one)")
    parser.add_argument("--arch", help="the variant (default: recognised from the checkpoint)")
    parser.add_argument("--chip", help="310 or 310P: per-card throughput of the Ascend runs (310 card = 4 chips)")
    parser.add_argument("--note", action="append", default=[], help="a line shown under the table (repeatable)")
    return parser


def main(args: argparse.Namespace) -> int:
    data = collect(args.workdir, args.checkpoint, args.arch, args.chip, args.note)
    html_path, md_path = write_report(data)
    print("\n".join(format_table(closing_rows(data), data.chip) + [""] * bool(data.notes) + data.notes))
    print(f"report: {html_path} (and {md_path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
