"""Write the dataset `.info` file the Ascend `benchmark` tool reads (`-input_text_path`).

    python gen_dataset_info.py bin ./prep_dataset ./repvgg_prep_bin.info 224 224
    python gen_dataset_info.py jpg /data/imagenet/val ./repvgg_jpg.info

`bin`: one `{index} {path} {W} {H}` line per `.bin` tensor in DIR (each checked to be a float32
3xHxW or uint8 HxWx3 tensor of that size). `jpg`: one line per image with its real width and
height, read from the header without decoding the pixels. Both in natural sort order (the
order ais_bench uses), so the same data always gives the same file.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from repvgg_pipeline.cli import EXIT_FAILED, fail, first_line, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these (slow) imports into one line
from PIL import Image
from tqdm import tqdm

from repvgg_pipeline.dataset import find_images
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.failures import printable
from repvgg_pipeline.formats.info import InfoEntry, write_info
from repvgg_pipeline.guards import refuse_overwriting_inputs


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen_dataset_info.py",
        description="Write a dataset .info file ({index} {path} {width} {height} per line) for .bin tensors "
                    "or for images.")
    parser.add_argument("file_type", choices=("bin", "jpg"), help="bin: preprocessed tensors; jpg: images")
    parser.add_argument("directory", type=Path, help="folder holding the .bin files or the images")
    parser.add_argument("info", type=Path, help="info file to write")
    parser.add_argument("width", type=int, nargs="?", help="model input width (bin only)")
    parser.add_argument("height", type=int, nargs="?", help="model input height (bin only)")
    return parser


def bin_entries(directory: Path, width: int, height: int) -> tuple[list[InfoEntry], str]:
    """Entries for the `.bin` tensors in `directory`, and their common layout; `UserError` on a misfit."""
    found = [(name, (directory / name).stat().st_size) for name in tensors.list_tensor_files(directory)]
    layouts = []
    for name, size in found:
        this = tensors.detect_layout(size, height, width)
        if this is None:
            expected = " or ".join(
                f"{tensors.tensor_nbytes(lay, height, width)} ({tensors.describe(lay, height, width)})"
                for lay in tensors.LAYOUTS)
            raise fail(f"{directory / name}: {size} bytes, expected {expected}")
        layouts.append(this)
    layout = max(tensors.LAYOUTS, key=layouts.count)  # the majority: the odd file is the one named
    for (name, _), this in zip(found, layouts, strict=True):
        if this != layout:
            raise fail(f"{directory / name} is {this} but {layouts.count(layout)} of the {len(found)} files are "
                       f"{layout}; one layout per folder")
    return [InfoEntry(i, os.path.join(str(directory), name), width, height) for i, (name, _) in enumerate(found)], \
        tensors.describe(layout, height, width)


def image_entries(directory: Path, info: Path | None = None) -> tuple[list[InfoEntry], list[tuple[str, str]]]:
    """Entries with the real size of every image (header only), and the images that could not be read.

    Images whose names no line of the .info file can hold (a newline, bytes that are not UTF-8)
    count as failures; FIFOs and symlink loops were skipped by `find_images` and are warned about.
    `info`, the file to write, must not be one of the images.
    """
    found = find_images(directory)
    if info is not None and info.exists():
        target = info.resolve()
        clash = next((item for item in found.items if item.path.resolve() == target), None)
        if clash is not None:
            raise fail(f"{info} is the image {printable(clash.relative)} of {directory}; "
                       "writing the info file there would destroy it")
    for note in found.notes:
        print(f"gen_dataset_info.py: warning: {note}", file=sys.stderr)
    entries, failures = [], [(item.relative, reason) for item, reason in found.unusable]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read; above 2x it fails
        for item in tqdm(found.items, unit="img", desc="gen_dataset_info", file=sys.stderr, disable=None):
            try:
                with Image.open(item.path) as img:
                    width, height = img.size
            except Exception as err:  # noqa: BLE001 - any error here means: not a readable image
                failures.append((item.relative, first_line(err, with_type=True)))
                continue
            entries.append(InfoEntry(len(entries), os.path.join(str(directory), item.relative), width, height))
    return entries, failures


def main(args: argparse.Namespace) -> int:
    if args.file_type == "bin":
        if args.width is None or args.height is None:
            raise fail("bin needs the model input size: gen_dataset_info.py bin DIR OUT.info WIDTH HEIGHT")
        if args.width < 1 or args.height < 1:
            raise fail(f"width and height must be positive, got {args.width} {args.height}")
        entries, what = bin_entries(args.directory, args.width, args.height)
        refuse_overwriting_inputs(args.info, (("input tensor", entry.path) for entry in entries))
        failures = []
    else:
        if args.width is not None:
            raise fail("jpg reads each image's real size and takes no WIDTH HEIGHT: "
                       "gen_dataset_info.py jpg DIR OUT.info")
        entries, failures = image_entries(args.directory, args.info)
        what = "original image sizes"
        if not entries:
            raise fail(f"none of the {len(failures)} images in {args.directory} could be read")
    try:
        Path(os.path.abspath(args.info)).parent.mkdir(parents=True, exist_ok=True)  # resolve() raises on a loop
        write_info(args.info, entries)
    except OSError as err:
        raise fail(f"cannot write {args.info}: {err.strerror or err}") from None
    for name, reason in failures:
        print(f"gen_dataset_info.py: cannot read image {printable(name)}: {printable(reason)}", file=sys.stderr)
    print(f"gen_dataset_info: {len(entries)} entries -> {args.info} ({what})"
          + (f", {len(failures)} unreadable images left out" if failures else ""))
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
