"""Dataset `.info` files: `{index} {path} {width} {height}` per line.

ASCEND_FORMATS.md §3 and §5. The old `benchmark` tool reads its inputs from such a
file (`-input_text_path`); for `.bin` inputs width and height are the model input
size, for images they are the original image size. Paths may contain spaces, so a
line is split as: the index off the left, then width and height off the right, and
what remains in between is the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail


@dataclass(frozen=True)
class InfoEntry:
    """One input of a dataset info file."""

    index: int
    path: str
    width: int
    height: int

    def line(self) -> str:
        """The line as the `benchmark` tool reads it (no newline)."""
        return f"{self.index} {self.path} {self.width} {self.height}"


def write_info(path: Path | str, entries: Iterable[InfoEntry]) -> None:
    """Write `entries` atomically, one `{index} {path} {W} {H}` line each, in the order given."""
    lines = []
    for entry in entries:
        if "\n" in entry.path or "\r" in entry.path:
            raise fail(f"cannot write a path with a line break into an info file: {entry.path!r}")
        lines.append(entry.line() + "\n")
    atomic.write_text(path, "".join(lines))


def read_info(path: Path | str) -> list[InfoEntry]:
    """Read an info file; raises `UserError` naming `file:line` for a malformed line.

    Blank lines are skipped. An empty file gives an empty list (the caller decides
    whether that is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise fail(f"info file not found: {path}" if not path.exists() else f"info file {path} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first index
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read info file {path}: {err}") from None
    entries: list[InfoEntry] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        head = line.split(None, 1)
        tail = head[1].rsplit(None, 2) if len(head) == 2 else []
        if len(tail) != 3 or not all(_is_uint(s) for s in (head[0], tail[1], tail[2])):
            raise fail(f"{path}:{line_no}: expected '<index> <path> <width> <height>', got {raw!r}")
        entries.append(InfoEntry(int(head[0]), tail[0], int(tail[1]), int(tail[2])))
    return entries


def _is_uint(text: str) -> bool:
    """True for a non-negative decimal integer (ASCII digits only; `str.isdigit` accepts '²')."""
    return text.isascii() and text.isdigit()
