"""Atomic file output: a reader never sees a half-written file.

Everything the pipeline writes goes to a temporary name in the destination folder
and is renamed into place only when complete (rename is atomic on POSIX within a
file system). An interrupted run therefore leaves either the old file, the new
file, or a stray `*.tmp-*` file that the next run ignores and overwrites; never a
truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_MARKER = ".tmp-"


def is_temporary(path: Path | str) -> bool:
    """True for the leftovers of an interrupted atomic write."""
    return TMP_MARKER in Path(path).name


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` if the block succeeds.

    `suffix` keeps an extension on the temporary name for writers that insist on one
    (e.g. numpy's `save` appends `.npy` otherwise). On any exception the temporary
    file is removed and `final` is left untouched.
    """
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARKER}", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared like any other file
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(final: Path | str, data: bytes | memoryview) -> None:
    """Write `data` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
