"""Finding the images of a data set: flat or class-per-subfolder layout, natural order, shards.

Two layouts are accepted, as in the ImageNet tooling people already have:

- flat: the official validation folder, `val/ILSVRC2012_val_00000001.JPEG ...` (labels come
  separately, e.g. ModelZoo's `val_label.txt`);
- class folders: `val/n01440764/*.JPEG ...` as torchvision's `ImageFolder` reads it; the class
  index is the rank of the folder name in sorted order (all non-hidden subfolders, as
  `ImageFolder.find_classes` counts them), so the labels match the models' 1000 outputs.

An image is a file whose extension Pillow can open; hidden files and folders (name starting
with '.', e.g. macOS `._x.jpg` resource forks and our own temporary files) are skipped. The
order is the natural sort that ais_bench uses for its inputs, so the same folder always gives
the same order, shards and info files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image

from repvgg_pipeline.cli import fail
from repvgg_pipeline.formats.labels import image_key

FLAT = "flat"
CLASS_FOLDERS = "class folders"


@dataclass(frozen=True)
class ImageItem:
    """One source image: where it is, its name relative to the source folder and its label (class layout)."""

    path: Path
    relative: str
    label: int | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ImageSet:
    """The images found under a source folder, in natural order."""

    root: Path
    layout: str
    items: list[ImageItem]
    classes: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def natural_key(text: str) -> list[str | int]:
    """Sort key that orders 'img2' before 'img10' (ais_bench's natural_sort: digits as numbers, text lower-cased)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with dot) of the formats Pillow can *open* (not the save-only ones)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_image_name(name: str) -> bool:
    """True for a non-hidden file name with an extension Pillow can open."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in image_extensions()


def _scan_files(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, other non-hidden files, non-hidden subfolders) directly in `folder`."""
    images, others, dirs = [], [], []
    try:
        entries = list(os.scandir(folder))
    except OSError as err:
        raise fail(f"cannot list {folder}: {err.strerror or err}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            dirs.append(Path(entry.path))
        elif is_image_name(entry.name):
            images.append(Path(entry.path))
        else:
            others.append(Path(entry.path))
    return images, others, dirs


def _walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """All image files below `folder` (recursively, following links like ImageFolder) and the other files."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            (images if is_image_name(name) else others).append(Path(dirpath) / name)
    return images, others


def find_images(source: Path | str, exclude: Path | str | None = None) -> ImageSet:
    """Find the images under `source` and decide its layout; `UserError` when there are none.

    `exclude` is a folder to leave out (the output folder when it lies inside the source).
    Mixing images at the top level with class subfolders holding images is refused: which
    layout was meant cannot be guessed, and guessing would lose images or labels.
    """
    root = Path(source)
    if not root.exists():
        raise fail(f"source folder not found: {root}")
    if not root.is_dir():
        raise fail(f"source is not a folder: {root}")
    excluded = Path(exclude).resolve() if exclude is not None else None
    top_images, top_others, subdirs = _scan_files(root)
    subdirs = [d for d in subdirs if excluded is None or d.resolve() != excluded]
    subdirs.sort(key=lambda d: d.name)  # ImageFolder: plain sorted folder names define the class indices

    per_class: list[tuple[str, list[Path]]] = []
    ignored = list(top_others)
    for folder in subdirs:
        images, others = _walk_images(folder)
        ignored.extend(others)
        per_class.append((folder.name, images))
    class_images = sum(len(images) for _, images in per_class)

    if top_images and class_images:
        raise fail(f"{root} holds both images ({len(top_images)}) and class subfolders with images "
                   f"({class_images}); use a flat folder or one subfolder per class")
    if top_images:
        items = [ImageItem(p, p.name) for p in sorted(top_images, key=lambda p: natural_key(p.name))]
        return ImageSet(root, FLAT, items, [], sorted(ignored))
    if class_images:
        items = []
        for label, (_, images) in enumerate(per_class):
            rel = sorted(((p.relative_to(root).as_posix(), p) for p in images), key=lambda rp: natural_key(rp[0]))
            items.extend(ImageItem(p, r, label) for r, p in rel)
        return ImageSet(root, CLASS_FOLDERS, items, [name for name, _ in per_class], sorted(ignored))
    raise fail(f"no images found in {root} (looked for {', '.join(sorted(_common_extensions()))} ...)")


def _common_extensions() -> set[str]:
    return {".jpeg", ".jpg", ".png"} & image_extensions()


def check_unique_keys(items: Sequence[ImageItem]) -> None:
    """Refuse two images that would share one output (`<key>.bin`) or one label key.

    The key is the file name up to the first '.' (labels.image_key), the name that joins an
    image with its tensor, its inference dump and its label downstream.
    """
    seen: dict[str, ImageItem] = {}
    for item in items:
        key = image_key(item.name)
        other = seen.get(key)
        if other is not None:
            raise fail(f"two images map to the same output '{key}': {other.relative} and {item.relative}")
        seen[key] = item


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `i/n` (0 <= i < n) into (i, n)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise fail(f"--shard expects i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise fail(f"--shard expects i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return index, count


def shard(items: Sequence[ImageItem], index: int, count: int) -> list[ImageItem]:
    """The `index`-th of `count` deterministic shares: every count-th image of the natural order."""
    return list(items[index::count])
