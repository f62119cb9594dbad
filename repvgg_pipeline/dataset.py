"""Finding the images of a data set: flat or class-per-subfolder layout, natural order, shards.

Two layouts are accepted, as in the ImageNet tooling people already have:

- flat: the official validation folder, `val/ILSVRC2012_val_00000001.JPEG ...` (labels come
  separately, e.g. ModelZoo's `val_label.txt`);
- class folders: `val/n01440764/*.JPEG ...` as torchvision's `ImageFolder` reads it; the class
  index is the rank of the folder name in sorted order (all non-hidden subfolders, as
  `ImageFolder.find_classes` counts them), so the labels match the models' 1000 outputs.

An image is a regular file whose extension Pillow can open; hidden files and folders (name
starting with '.', e.g. macOS `._x.jpg` resource forks and our own temporary files) are skipped,
and so are FIFOs, sockets and devices (with a note: reading one would block or never end).
Symlinks are followed like ImageFolder does, each folder once (a loop is noted, not followed). The
order is the natural sort that ais_bench uses for its inputs, so the same folder always gives
the same order, shards and info files.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from repvgg_pipeline.cli import fail
from repvgg_pipeline.formats.failures import printable
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
    notes: list[str] = field(default_factory=list)  # one line each: special files and symlink loops skipped
    unusable: list[tuple[ImageItem, str]] = field(default_factory=list)  # images whose names no text file can hold


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


def _kind(entry: os.DirEntry) -> str:
    """'dir', 'file', 'dangling' (a symlink to nothing) or what else it is ('FIFO', 'socket', ...), links followed."""
    try:
        mode = entry.stat().st_mode  # follows symlinks
    except FileNotFoundError:
        return "dangling"
    except OSError as err:  # e.g. ELOOP: a symlink to itself
        return f"unreadable entry ({err.strerror or err})"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode), "special file")


_SPECIAL_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
                  stat.S_IFBLK: "block device"}


@dataclass
class _Scan:
    """What one folder holds: image files, other files, subfolders, and notes on what was skipped."""

    images: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _scan_files(folder: Path, root: Path) -> _Scan:
    """Image files, other non-hidden files and non-hidden subfolders directly in `folder`.

    Only regular files are images: a FIFO named `x.JPEG` would block the reader forever, a
    device would never end. They are skipped with a note. A dangling link named like an image
    stays an image, so that it is reported as unreadable rather than silently dropped.
    """
    scan = _Scan()
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as err:
        raise fail(f"cannot list {folder}: {err.strerror or err}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        path = Path(entry.path)
        if kind == "dir":
            scan.dirs.append(path)
        elif not is_image_name(entry.name):
            scan.others.append(path)
        elif kind in ("file", "dangling"):
            scan.images.append(path)
        else:
            scan.notes.append(f"{printable(_relative(path, root))}: a {kind}, not a regular file; skipped")
    return scan


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _folder_id(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _walk_images(folder: Path, root: Path, visited: set[tuple[int, int]], excluded: Path | None) -> _Scan:
    """All image files below `folder`, following symlinks like ImageFolder, each folder read once.

    A link back to a folder already read (`c1/up -> ..`, a loop) is not followed and gets a
    note: `os.walk(followlinks=True)` would descend forever. Folders are identified by
    (st_dev, st_ino), so any loop is caught, whatever path leads into it.
    """
    found = _Scan()
    pending = [folder]
    while pending:
        scan = _scan_files(pending.pop(), root)
        found.images += scan.images
        found.others += scan.others
        found.notes += scan.notes
        for sub in reversed(scan.dirs):
            if excluded is not None and sub.resolve() == excluded:
                continue
            ident = _folder_id(sub)
            if ident in visited:
                found.notes.append(f"{printable(_relative(sub, root))}: leads back to a folder already read "
                                   f"({printable(str(sub.resolve()))}, a symlink loop?); not followed")
                continue
            if ident is not None:
                visited.add(ident)
            pending.append(sub)
    return found


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
    top = _scan_files(root, root)
    subdirs = [d for d in top.dirs if excluded is None or d.resolve() != excluded]
    subdirs.sort(key=lambda d: d.name)  # ImageFolder: plain sorted folder names define the class indices
    notes = list(top.notes)
    root_id = _folder_id(root)
    for loop in [d for d in subdirs if _folder_id(d) == root_id]:
        notes.append(f"{printable(loop.name)}: leads back to {printable(str(root))} itself (a symlink loop); "
                     "not followed")
        subdirs.remove(loop)
    visited = {ident for ident in map(_folder_id, [root, *subdirs]) if ident is not None}

    per_class: list[tuple[str, list[Path]]] = []
    ignored = list(top.others)
    for folder in subdirs:
        scan = _walk_images(folder, root, visited, excluded)
        ignored.extend(scan.others)
        notes.extend(scan.notes)
        per_class.append((folder.name, scan.images))
    class_images = sum(len(images) for _, images in per_class)

    if top.images and class_images:
        raise fail(f"{root} holds both images ({len(top.images)}) and class subfolders with images "
                   f"({class_images}); use a flat folder or one subfolder per class")
    if top.images:
        items = [ImageItem(p, p.name) for p in sorted(top.images, key=lambda p: natural_key(p.name))]
        return _image_set(root, FLAT, items, [], sorted(ignored), notes)
    if class_images:
        items = []
        for label, (_, images) in enumerate(per_class):
            rel = sorted(((p.relative_to(root).as_posix(), p) for p in images), key=lambda rp: natural_key(rp[0]))
            items.extend(ImageItem(p, r, label) for r, p in rel)
        return _image_set(root, CLASS_FOLDERS, items, [name for name, _ in per_class], sorted(ignored), notes)
    hint = f"; {notes[0]}" if notes else ""
    raise fail(f"no images found in {root} (looked for {', '.join(sorted(_common_extensions()))} ...){hint}")


def _image_set(root: Path, layout: str, items: list[ImageItem], classes: list[str], ignored: list[Path],
               notes: list[str]) -> ImageSet:
    """The ImageSet, with images whose names no line-based file can carry moved to `unusable`."""
    usable, unusable = [], []
    for item in items:
        reason = unusable_name_reason(item.relative)
        if reason:
            unusable.append((item, reason))
        else:
            usable.append(item)
    return ImageSet(root, layout, usable, classes, ignored, notes, unusable)


def unusable_name_reason(name: str) -> str | None:
    """Why an image name cannot travel through val_label.txt / .info / dump names, or None when it can.

    Those files hold one name per line, and ais_bench, ATC and the label readers know no
    escapes: a newline or another control character would split a record, and bytes that are
    not UTF-8 cannot be written into a UTF-8 text file.
    """
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in name):
        return "its name is not valid UTF-8, which the text files of the pipeline (val_label.txt, .info) cannot hold"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return ("its name holds a control character (newline, tab, ...), which would split its line in "
                "val_label.txt and the .info file; rename it")
    return None


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


def load_eval_batch(folder: Path | str, input_size: int, limit: int) -> tuple[np.ndarray, int]:
    """Up to `limit` images from `folder` through the published eval transform, as one float32 NCHW batch.

    Returns the batch and how many unreadable images (and FIFOs, loops, unusable names) were skipped
    (pth2onnx.py --verify-images).
    """
    from repvgg_pipeline.transforms import EvalTransform, default_resize, normalize_lut, preprocess_image

    found = find_images(folder)
    items = found.items
    transform = EvalTransform(resize=default_resize(input_size), crop=input_size)
    lut = normalize_lut(transform.mean, transform.std)
    arrays, skipped = [], len(found.unusable) + len(found.notes)
    for item in items:
        if len(arrays) == limit:
            break
        try:
            arrays.append(preprocess_image(item.path, transform, lut))
        except Exception:  # noqa: BLE001 - a corrupt image is skipped and counted, not fatal here
            skipped += 1
    if not arrays:
        raise fail(f"--verify-images {folder}: no readable image")
    return np.stack(arrays), skipped
