"""Top-k accuracy of an inference run's dumps against val_label.txt, written as the ModelZoo result.json.

    python postprocess.py result/ val_label.txt result.json
    python postprocess.py result/dumpOutput_device0/ val_label.txt ./ result.json   # ModelZoo 4-argument form

The dumps are found without being told the tool: the old benchmark's `{stem}_1.txt|.bin`,
ais_bench's (and infer.py's) `{stem}_0.bin|.npy|.txt`, directly in the folder or in its
one timestamped sub-folder, or through an ais_bench summary json given instead of a folder.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

from repvgg_pipeline.cli import EXIT_FAILED, cannot_write, fail, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these (slow) imports into one line
import numpy as np

from repvgg_pipeline.accuracy import BACKGROUND_CLASSES, non_finite_rows, topk_accuracy
from repvgg_pipeline.formats.dumps import DumpSet, find_dumps, parse_dump_name, read_dumps
from repvgg_pipeline.formats.labels import read_labels
from repvgg_pipeline.formats.result import build_result, percent_text, write_result
from repvgg_pipeline.guards import refuse_overwriting_inputs


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postprocess.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dumps", type=Path, help="folder of dumps (or its parent), or an ais_bench *_summary.json")
    parser.add_argument("labels", type=Path, help="val_label.txt: '<image file> <0-based class>' per line")
    parser.add_argument("output", nargs="?", type=Path, default=Path("result.json"),
                        help="result.json to write (default: ./result.json); a folder if NAME.json follows")
    parser.add_argument("json_name", nargs="?", help="ModelZoo 4-argument form: file name inside the OUTPUT folder")
    parser.add_argument("--topk", type=int, default=5, help="report top-1 .. top-K accuracy (default 5)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the dumps that have a label instead of failing on the others")
    parser.add_argument("--output-index", type=int, default=None,
                        help="which model output to score when dumps of several are present (_0, _1, ...)")
    parser.add_argument("--dump-format", choices=("bin", "npy", "txt"), default=None,
                        help="which dumps to read when a folder holds several formats")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="element type of raw .bin dumps (float16 for an OM built with fp16 outputs)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="values per dump; default: that of the first dump (1001 means background first)")
    return parser


def result_path(args: argparse.Namespace) -> Path:
    """The output file: OUTPUT, or OUTPUT/NAME.json in the ModelZoo 4-argument form."""
    if args.json_name is not None:
        return args.output / args.json_name
    if args.output.is_dir():
        raise fail(f"{args.output} is a folder; give a file name (OUT.json) or the 4-argument form DIR NAME.json")
    return args.output


IMAGENET_CLASSES = (BACKGROUND_CLASSES - 1, BACKGROUND_CLASSES)


def check_class_count(dumps: DumpSet, classes: int, dtype: str, num_classes: int | None) -> None:
    """Raw `.bin` dumps carry no shape: their value count is a guess from the size and --dtype, so one
    that is not an ImageNet classifier's (1000, or 1001 with background) must be confirmed with
    --num-classes. Otherwise float32 dumps read as float16 score 2,000 "classes" without a word."""
    if dumps.suffix != ".bin" or num_classes is not None or classes in IMAGENET_CLASSES:
        return
    other = "float32" if dtype == "float16" else "float16"
    ratio = 2 if other == "float16" else 0.5
    hint = f"; read as {other} they are {int(classes * ratio)} values: check --dtype" \
        if int(classes * ratio) in IMAGENET_CLASSES else ""
    raise fail(f"{dumps.files[0]}: {classes} {dtype} values per dump, not the 1000 (or 1001) classes of an ImageNet "
               f"model{hint}; pass --num-classes {classes} if the model has {classes} classes")


def main(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise fail(f"--topk must be at least 1, got {args.topk}")
    if args.num_classes is not None and args.num_classes < 1:
        raise fail(f"--num-classes must be at least 1, got {args.num_classes}")
    out_path = result_path(args)
    labels = read_labels(args.labels)
    started = time.perf_counter()
    dumps = find_dumps(args.dumps, args.output_index, args.dump_format)
    inputs = [("label file", args.labels)] + ([("dump summary", Path(dumps.where))]
                                              if os.path.isfile(dumps.where) else [])
    # lazy: the dumps are stat'ed only when the output already exists
    refuse_overwriting_inputs(out_path, itertools.chain(inputs, (("dump", f) for f in dumps.files)))
    if parse_dump_name(out_path.name) and any(os.path.realpath(out_path.parent) == os.path.realpath(folder)
                                              for folder in {os.path.dirname(f) or "." for f in dumps.files}):
        raise fail(f"output {out_path} is named like a dump in the dump folder: the next run would score it; "
                   f"give another name")

    unlabelled = [path for path, key in zip(dumps.files, dumps.keys, strict=True) if key not in labels]
    if unlabelled and not args.allow_missing:
        raise fail(f"{len(unlabelled)} of {len(dumps.files)} dumps have no label in {args.labels} "
                   f"(first: {os.path.basename(unlabelled[0])}); pass --allow-missing to score the others")
    logits = read_dumps(dumps, args.dtype, args.num_classes)
    check_class_count(dumps, logits.shape[1], args.dtype, args.num_classes)
    labelled = np.fromiter((key in labels for key in dumps.keys), dtype=bool, count=len(dumps.keys))
    if not labelled.any():
        raise fail(f"none of the {len(dumps.files)} dumps in {dumps.where} has a label in {args.labels}")
    targets = np.fromiter((labels[key] for key in dumps.keys if key in labels), dtype=np.int64)
    scores = logits if labelled.all() else logits[labelled]
    accuracy = topk_accuracy(scores, targets, args.topk)
    elapsed = time.perf_counter() - started

    labels_without_dump = len(labels) - int(labelled.sum())
    non_finite = accuracy.non_finite
    extra = {
        "dumps": len(dumps.files),
        "dumps_without_label": len(unlabelled),
        "labels_without_dump": labels_without_dump,
        "dumps_with_non_finite_values": non_finite,
        "dump_format": dumps.suffix.lstrip("."),
        "output_index": dumps.output_index,
        "dump_source": str(dumps.where),
        "label_file": str(args.labels),
    }
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_result(out_path, build_result(accuracy, extra))
    except OSError as err:  # a file where a folder should be, a read-only folder, disk full
        raise cannot_write(out_path, err) from None

    tops = ", ".join(f"top{i} {percent_text(acc)}" for i, acc in enumerate(accuracy.topk, 1))
    print(f"{accuracy.images} images, {accuracy.classes} classes: {tops}; "
          f"mean per-class top1 {percent_text(accuracy.mean_per_class_top1)}")
    notes = []
    if unlabelled:
        notes.append(f"{len(unlabelled)} dumps without a label skipped")
    if labels_without_dump:
        notes.append(f"{labels_without_dump} labels without a dump")
    if notes:
        print("note: " + "; ".join(notes), file=sys.stderr)
    print(f"postprocess: scored {accuracy.images} of {len(dumps.files)} {dumps.suffix} dumps in {elapsed:.2f} s "
          f"({len(dumps.files) / max(elapsed, 1e-9):.0f} files/s) -> {out_path}", file=sys.stderr)
    if non_finite:
        scored_files = [f for f, keep in zip(dumps.files, labelled, strict=True) if keep]
        first = scored_files[int(np.flatnonzero(non_finite_rows(scores))[0])]
        print(f"postprocess.py: error: {non_finite} of {accuracy.images} dumps hold NaN/inf scores, counted as "
              f"misses (first: {first})", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
