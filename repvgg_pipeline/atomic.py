"""Atomic file output: a reader never sees a half-written file.

Everything the pipeline writes goes to a temporary name in the destination folder
and is renamed into place only when complete (rename is atomic on POSIX within a
file system). An interrupted run therefore leaves either the old file, the new
file, or a stray `*.tmp-*` file that the next run ignores and overwrites; never a
truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_MARKER = ".tmp-"


def is_temporary(path: Path | str) -> bool:
    """True for the leftovers of an interrupted atomic write."""
    return TMP_MARKER in Path(path).name


def _refuse_replacing_special(final: Path) -> None:
    """The rename would replace whatever `final` is: a FIFO, a socket, a device or a dangling or looping symlink
    is not an earlier output of ours, so it is refused (an OSError, which every writer reports in one line)."""
    try:
        mode = os.lstat(final).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # the usual case: nothing there yet
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder: the rename itself says "Is a directory"
        return
    try:
        if stat.S_ISLNK(mode) and stat.S_ISREG(os.stat(final).st_mode):
            return  # a link to a file: the link is replaced, the file it points to is kept
    except OSError:
        pass
    raise FileExistsError(errno.EEXIST, "exists and is not a regular file (a FIFO, device, or dangling or looping "
                                        "symlink?); refusing to replace it", str(final))


def _temporary_beside(final: Path, suffix: str) -> tuple[int, Path]:
    """Create an empty temporary file in `final`'s folder (same file system, so the rename is atomic)."""
    _refuse_replacing_special(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARKER}", suffix=suffix, dir=final.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be shared like any other file
    return fd, Path(tmp_name)


@contextlib.contextmanager
def _rename_on_success(tmp: Path, final: Path) -> Iterator[None]:
    try:
        yield
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` if the block succeeds.

    For writers that want a path rather than a file object; `suffix` keeps an extension on
    the temporary name for writers that insist on one (numpy's `save` appends `.npy`
    otherwise). On any exception the temporary file is removed and `final` is left untouched.
    """
    final = Path(final)
    fd, tmp = _temporary_beside(final, suffix)
    os.close(fd)
    with _rename_on_success(tmp, final):
        yield tmp


@contextlib.contextmanager
def atomic_open(final: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Yield an open file that becomes `final` when the block succeeds (closed before the rename).

    Writes through the descriptor `mkstemp` returns: no reopen, which matters when writing
    50,000 tensors.
    """
    final = Path(final)
    fd, tmp = _temporary_beside(final, "")
    with _rename_on_success(tmp, final), os.fdopen(fd, mode) as out:
        yield out


def write_bytes(final: Path | str, data: bytes | memoryview) -> None:
    """Write `data` to `final` atomically."""
    with atomic_open(final, "wb") as out:
        out.write(data)


def write_text(final: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `final` atomically."""
    with atomic_open(final, "wb") as out:
        out.write(text.encode("utf-8"))
