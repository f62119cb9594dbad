"""The demo's input images, made on the spot: no download, no data package, same bytes every time.

`scripts/run_pipeline.sh` with no arguments must run on a fresh machine without network
access, so the few dozen images it classifies are drawn here with numpy and Pillow from
a fixed seed: smooth colour fields with a few shapes, at varied sizes (smaller and
larger than the 224 crop, portrait and landscape), one grayscale JPEG and one PNG, so the
demo goes through the same decoding and resizing cases real data does. Their labels
are random class indices: the images show no ImageNet class, and with a random-weight
model accuracy is meaningless anyway; what the demo checks is that every step runs and
that the exported model agrees with PyTorch.

    python -m repvgg_pipeline.demo demo_out/images          # 32 images + val_label.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail, run_cli
from repvgg_pipeline.formats.labels import write_labels

DEFAULT_COUNT = 32
NUM_CLASSES = 1000
GRAYSCALE_INDEX = 3  # which image is saved as a one-channel JPEG
PNG_INDEX = 5  # which image is saved as PNG


def demo_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random colour field with a few random ellipses and rectangles on it."""
    coarse = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.5))))


def image_name(index: int, png: bool = False) -> str:
    """`demo_00001.JPEG`, ImageNet-val style (key = name up to the first dot)."""
    return f"demo_{index:05d}.{'png' if png else 'JPEG'}"


def write_demo_images(out_dir: Path | str, count: int = DEFAULT_COUNT, seed: int = 0) -> list[tuple[str, int]]:
    """Write `count` images and `val_label.txt` into `out_dir`; return the (file name, label) pairs.

    Deterministic for a given seed (and Pillow's encoders); images already present with
    the right name are rewritten identically, so a rerun is harmless.
    """
    if count < 1:
        raise fail(f"the demo needs at least one image, got {count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labelled = []
    for index in range(1, count + 1):
        width, height = (int(v) for v in rng.integers(96, 720, 2))
        image = demo_image(rng, width, height)
        label = int(rng.integers(0, NUM_CLASSES))
        name = image_name(index, png=index == PNG_INDEX)
        if index == GRAYSCALE_INDEX:
            image = image.convert("L")
        with atomic.atomic_path(out_dir / name, suffix=Path(name).suffix) as tmp:
            if name.endswith(".png"):
                image.save(tmp, format="PNG")
            else:
                image.save(tmp, format="JPEG", quality=90)
        labelled.append((name, label))
    write_labels(out_dir / "val_label.txt", labelled)
    return labelled


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repvgg_pipeline.demo",
                                     description="Write the demo's generated images and their val_label.txt.")
    parser.add_argument("out_dir", type=Path, help="folder for the images and val_label.txt")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"number of images (default {DEFAULT_COUNT})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def main(args: argparse.Namespace) -> int:
    labelled = write_demo_images(args.out_dir, args.count, args.seed)
    print(f"demo: wrote {len(labelled)} generated images and val_label.txt to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
