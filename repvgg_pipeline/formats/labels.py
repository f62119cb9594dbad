"""The label file `val_label.txt`: `<file name> <0-based class index>` per line.

ASCEND_FORMATS.md §6. The image key is the file name up to the first `.`, as in
the ModelZoo postprocess script, so `ILSVRC2012_val_00000001.JPEG`, its
`ILSVRC2012_val_00000001.bin` tensor and its `ILSVRC2012_val_00000001_0.bin` dump
(after the output suffix is removed) all map to one label. File names may contain
spaces, so a line is split at its *last* run of white space.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail

_INTEGER = re.compile(r"-?[0-9]+")
MAX_CLASSES = 10**9


def image_key(file_name: str) -> str:
    """The key that joins an image, its tensor, its dump and its label: the base name up to the first `.`."""
    # os.path, not Path: this runs once per label line (50,000 for ImageNet val) and Path costs a third of postprocess
    return os.path.basename(file_name).split(".", 1)[0]


def read_labels(path: Path | str) -> dict[str, int]:
    """Read a label file into `{image key: class index}`.

    Raises `UserError` naming the file and line for a malformed line or a key given twice
    with different labels.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(f"label file not found: {path}" if not path.exists() else f"label file {path} is not a regular file")
    labels: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the first file name
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read label file {path}: {err}") from None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        # ASCII digits, one optional sign: str.isdigit accepts '²' and lstrip("-") '--5', both of which int() refuses
        if len(parts) != 2 or not _INTEGER.fullmatch(parts[1]):
            raise fail(f"{path}:{line_no}: expected '<file> <class index>', got {raw!r}")
        key, label = image_key(parts[0]), int(parts[1])
        if label < 0:
            raise fail(f"{path}:{line_no}: negative class index {label}")
        if label >= MAX_CLASSES:  # would overflow the int64 label array long before it could fit any output
            raise fail(f"{path}:{line_no}: class index {parts[1][:30]} is not a plausible class (>= {MAX_CLASSES})")
        if labels.get(key, label) != label:
            raise fail(f"{path}:{line_no}: {key} has two different labels ({labels[key]} and {label})")
        labels[key] = label
    if not labels:
        raise fail(f"label file is empty: {path}")
    return labels


def write_labels(path: Path | str, file_labels: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
    """Write `<file name> <index>` lines atomically, in the order given."""
    items = file_labels.items() if isinstance(file_labels, Mapping) else file_labels
    atomic.write_text(path, "".join(f"{name} {int(label)}\n" for name, label in items))
