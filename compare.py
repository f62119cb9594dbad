"""Compare the outputs of inference runs end to end: agreement, logit drift, accuracy change and its significance.

    python compare.py result/torch result/bs16 result/fp16 --labels val_label.txt --names torch,onnx,fp16
    python compare.py result/bs16_summary.json result/om_summary.json --json drift.json --min-cosine 0.999

REF and each OTHER are dump folders in any layout postprocess.py reads (ais_bench, infer.py,
the old benchmark tool; or the folder above one timestamped dump folder) or ais_bench summary
jsons. Each OTHER is compared with REF over the images both have. Exit codes: 0 ok, 1 a
threshold (--min-cosine, --max-flip-rate) violated, 2 bad input (also: the runs hold different
images, unless --allow-missing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import EXIT_FAILED, fail, run_cli
from repvgg_pipeline.compare import (
    compare_pair,
    default_name,
    is_compare_json,
    json_safe,
    load_set,
    same_dumps,
    same_file,
    table_lines,
    violations,
)
from repvgg_pipeline.formats.labels import read_labels


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="the reference run: dump folder or ais_bench *_summary.json")
    parser.add_argument("others", type=Path, nargs="+", help="runs to compare with it (same kinds of path)")
    parser.add_argument("--labels", type=Path, help="val_label.txt: adds accuracy of both runs and McNemar's test")
    parser.add_argument("--names", help="comma-separated names of REF and each OTHER (default: folder names)")
    parser.add_argument("--json", type=Path, help="also write the comparison as json to this file")
    parser.add_argument("--min-cosine", type=float, help="exit 1 when any image's cosine similarity is below this")
    parser.add_argument("--max-flip-rate", type=float,
                        help="exit 1 when the fraction of images whose top-1 changed exceeds this (0..1)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="compare the images both runs have when the sets differ (they are counted and named)")
    parser.add_argument("--show-flipped", type=int, default=20, metavar="N",
                        help="list at most N changed images per run in the table (default 20; the json has all)")
    parser.add_argument("--output-index", type=int, help="which model output when dumps of several are present")
    parser.add_argument("--dump-format", choices=("bin", "npy", "txt"), help="which dumps when a folder holds several")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="element type of raw .bin dumps (float16 for an OM built with fp16 outputs)")
    return parser


def _names(args: argparse.Namespace) -> list[str]:
    paths = [args.reference, *args.others]
    if args.names is None:
        names = [default_name(p) for p in paths]
        if len(set(names)) < len(names):  # two runs named alike (bs16 of two work folders): use the paths
            names = [str(p) for p in paths]
        return names
    names = [n.strip() for n in args.names.split(",")]
    if len(names) != len(paths) or not all(names):
        raise fail(f"--names needs {len(paths)} non-empty names (REF and each OTHER), got {args.names!r}")
    if len(set(names)) < len(names):
        raise fail(f"--names repeats a name: {args.names!r}")
    return names


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.min_cosine is not None and not -1.0 <= args.min_cosine <= 1.0:
        raise fail(f"--min-cosine must be between -1 and 1, got {args.min_cosine}")
    if args.max_flip_rate is not None and not 0.0 <= args.max_flip_rate <= 1.0:
        raise fail(f"--max-flip-rate must be between 0 and 1 (a fraction), got {args.max_flip_rate}")
    if args.show_flipped < 0:
        raise fail(f"--show-flipped must be at least 0, got {args.show_flipped}")
    if args.json is not None:
        if args.json.is_dir():
            raise fail(f"--json {args.json} is a folder; give a file name")
        for path in (args.reference, *args.others, args.labels):
            if path is not None and same_file(args.json, path):
                raise fail(f"--json {args.json} is one of the inputs; it would be overwritten")
        if os.path.lexists(args.json) and not is_compare_json(args.json):
            raise fail(f"--json {args.json} exists and is not a comparison compare.py wrote; "
                       f"refusing to replace it: give another name")
    names = _names(args)
    labels = read_labels(args.labels) if args.labels is not None else None
    runs = [load_set(path, name, args.output_index, args.dump_format, args.dtype)
            for path, name in zip([args.reference, *args.others], names, strict=True)]
    reference = runs[0]
    for index, run in enumerate(runs[1:], start=1):
        for earlier in runs[:index]:
            if same_dumps(earlier, run):
                raise fail(f"{run.where} reads the same dumps as {earlier.where}: a run compared with itself; "
                           f"give the dumps of another run")
    pairs = [compare_pair(reference, other, labels, args.allow_missing) for other in runs[1:]]

    print("\n".join(table_lines(reference, pairs, args.show_flipped)))
    if args.json is not None:
        record = {"reference": reference.name, "reference_source": reference.where,
                  "labels": None if args.labels is None else str(args.labels), "pairs": pairs}
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(args.json, json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
        except OSError as err:
            raise fail(f"cannot write --json {args.json}: {err.strerror or err}") from None
    problems = violations(pairs, args.min_cosine, args.max_flip_rate)
    elapsed = time.perf_counter() - started
    images = sum(p["images"] for p in pairs)
    written = f" -> {args.json}" if args.json is not None else ""
    print(f"compare: {len(pairs)} run(s) against {reference.name}, {images} image pairs in {elapsed:.2f} s"
          f"{written}", file=sys.stderr)
    if problems:
        print("compare: threshold violated: " + "; ".join(problems), file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
