"""Batch-size sweep: are one backend's outputs the same at every batch size? (`batch_agreement.json`)

Accuracy only needs computing once per backend when every batch size gives each image
the same ranked top-5 classes: top-1..top-5 accuracy then cannot differ. This compares
the dumps of each run with those of the first (the reference), writes what it found to
`batch_agreement.json` (read and written only here), and names on stdout, one per line,
the runs whose top-5 differ, so `run_pipeline.sh` computes their accuracy too and the
report shows the difference.

    python -m repvgg_pipeline.report_sweep --json WORKDIR/batch_agreement.json --backend onnxruntime \
        bs1=WORKDIR/result/bs1 bs16=WORKDIR/result/bs16 ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from repvgg_pipeline import atomic
from repvgg_pipeline.accuracy import top_k_indices
from repvgg_pipeline.cli import UserError, cannot_write, fail, run_cli
from repvgg_pipeline.formats.dumps import find_dumps, read_dumps

AGREEMENT_FILE = "batch_agreement.json"
TOP_K = 5


@dataclass(frozen=True)
class Comparison:
    """One run against the reference run, over the images both have."""

    name: str
    images: int  # images both runs have
    only_here: int  # images this run has and the reference lacks
    only_reference: int
    top1_changed: int
    top5_changed: int  # images whose ranked top-5 differ
    max_abs_diff: float
    identical: bool  # bit-identical logits

    @property
    def equal(self) -> bool:
        """Same images, same ranked top-5 for every one: the accuracy is the reference's."""
        return self.top5_changed == 0 and self.only_here == 0 and self.only_reference == 0


def _logits(folder: Path) -> tuple[list[str], np.ndarray]:
    dumps = find_dumps(folder)
    return dumps.keys, read_dumps(dumps)


def compare(reference: Path | tuple[list[str], np.ndarray], other: Path, name: str) -> Comparison:
    """Compare the dumps under `other` with those under `reference` (any layout postprocess.py reads).

    `reference` may be given already read, as (keys, logits), so a sweep reads it once.
    """
    ref_keys, ref = reference if isinstance(reference, tuple) else _logits(reference)
    keys, logits = _logits(other)
    index = {key: row for row, key in enumerate(ref_keys)}
    common = [(index[key], row) for row, key in enumerate(keys) if key in index]
    rows_ref = np.array([r for r, _ in common], dtype=np.int64)
    rows = np.array([r for _, r in common], dtype=np.int64)
    a, b = ref[rows_ref], logits[rows]
    if a.shape[1:] != b.shape[1:]:
        raise fail(f"{other}: {b.shape[1]} values per dump, the reference has {a.shape[1]}")
    top_a, top_b = top_k_indices(a, TOP_K), top_k_indices(b, TOP_K)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    max_abs = float(np.nanmax(diff)) if diff.size and not np.isnan(diff).all() else 0.0
    return Comparison(
        name=name, images=len(common), only_here=len(keys) - len(common),
        only_reference=len(ref_keys) - len(common),
        top1_changed=int((top_a[:, 0] != top_b[:, 0]).sum()),
        top5_changed=int((top_a != top_b).any(axis=1).sum()),
        max_abs_diff=max_abs,
        identical=bool(a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)))
        if a.dtype == b.dtype == np.float32 else bool(np.array_equal(a, b)),
    )


def build_agreement(backend: str, runs: list[tuple[str, Path]]) -> dict:
    """The batch_agreement.json content: the first run is the reference."""
    reference_name, reference_dir = runs[0]
    reference = _logits(reference_dir)
    comparisons = [compare(reference, folder, name) for name, folder in runs[1:]]
    return {
        "backend": backend,
        "reference": reference_name,
        "runs": [{"name": name, "dumps": str(folder)} for name, folder in runs],
        "comparisons": [{**asdict(c), "equal": c.equal} for c in comparisons],
    }


def write_agreement(path: Path, agreement: dict) -> None:
    atomic.write_text(path, json.dumps(agreement, indent=1) + "\n")


def _is_comparison(item: object) -> bool:
    """Whether a comparison read back has every field `describe` and the report use, of the right type."""
    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    counts = ("images", "top1_changed", "top5_changed")
    return (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("equal"), bool)
            and all(isinstance(item.get(k), int) and not isinstance(item.get(k), bool) for k in counts)
            and number(item.get("max_abs_diff"))
            and all(number(item.get(k, 0)) for k in ("only_here", "only_reference")))


def read_agreements(path: Path) -> list[dict]:
    """The sweeps recorded in `path` (one object, or a list of them, one per backend); [] when absent."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"cannot read {path}: {err}") from None
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("reference"), str)
                and isinstance(item.get("comparisons"), list)
                and all(_is_comparison(c) for c in item["comparisons"])):
            raise fail(f"{path} is not a batch agreement file (no 'reference', or a comparison lacks its counts)")
    return items


def describe(comparison: dict, reference: str) -> str:
    """One line a person reads: `bs16 vs bs1: same top-5 for all 32 images, max |diff| 0 (bit-identical)`."""
    head = f"{comparison['name']} vs {reference}"
    missing = ""
    if comparison.get("only_here") or comparison.get("only_reference"):
        missing = f"; {comparison['only_here']} images only in {comparison['name']}, " \
                  f"{comparison['only_reference']} only in {reference}"
    diff = f"max |diff| {comparison['max_abs_diff']:.3g}" + (" (bit-identical)" if comparison.get("identical") else "")
    if comparison.get("equal"):
        return f"{head}: same top-5 for all {comparison['images']} images, {diff}{missing}"
    return (f"{head}: top-1 differs on {comparison['top1_changed']}, top-5 on {comparison['top5_changed']} of "
            f"{comparison['images']} images, {diff}{missing}")


def _run_arg(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DUMP_FOLDER, got {text!r}")
    return name, Path(folder)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repvgg_pipeline.report_sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=_run_arg, metavar="NAME=DUMPS",
                        help="runs of one backend, the first being the reference (e.g. bs1=result/bs1)")
    parser.add_argument("--backend", required=True, help="the backend these runs used (recorded in the file)")
    parser.add_argument("--json", type=Path, required=True, help="batch_agreement.json to write")
    return parser


def main(args: argparse.Namespace) -> int:
    names = [name for name, _ in args.runs]
    if len(set(names)) != len(names):
        raise fail(f"run names must differ, got {', '.join(names)}")
    if os.path.lexists(args.json):  # ours from an earlier sweep may be replaced; nothing else (a run summary, say)
        try:
            if not os.path.isfile(args.json):  # a FIFO would hang the read below
                raise fail("not a regular file")
            read_agreements(args.json)
        except UserError:
            raise fail(f"--json {args.json} exists and is not a batch agreement file; refusing to replace it") from None
    agreement = build_agreement(args.backend, args.runs)
    try:
        write_agreement(args.json, agreement)
    except OSError as err:
        raise cannot_write(args.json, err) from None
    for comparison in agreement["comparisons"]:
        print(describe(comparison, agreement["reference"]), file=sys.stderr)
        if not comparison["equal"]:
            print(comparison["name"])
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
