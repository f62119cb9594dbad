"""The list of inputs that failed (`failed.txt`): `<relative name>\\t<reason>` per line, names escaped.

A file name may hold any character but '/' and NUL, a newline included; written as is, such a
name would split its record in two. Names are therefore escaped here, in the one module that
reads and writes the list (and that gives the escaped form for one-line messages):
backslash -> `\\\\`, newline, carriage return and tab -> `\\n`, `\\r`, `\\t`, any other control
character -> `\\xNN` (`\\uNNNN` above 0x7f), and a byte that is not UTF-8 (Python's surrogate escape) -> `\\xNN` too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from repvgg_pipeline import atomic

_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")


def printable(text: str) -> str:
    """`text` on one line, escaped as in failed.txt (a plain name comes back unchanged, backslashes aside)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def unprintable(text: str) -> str:
    """The inverse of `printable`: the original name (undecodable bytes come back surrogate-escaped)."""
    def one(match: re.Match) -> str:
        code = match.group(1)
        if code.startswith("u"):
            return chr(int(code[1:], 16))
        if code.startswith("x"):
            value = int(code[1:], 16)
            return chr(value) if value < 0x80 else chr(0xDC00 + value)
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[code]
    return _UNESCAPE.sub(one, text)


def write_failures(path: Path | str, failures: Iterable[tuple[str, str]]) -> None:
    """Write the list atomically; remove a stale list when nothing failed (the list describes the latest run)."""
    failures = list(failures)
    if failures:
        atomic.write_text(path, "".join(f"{printable(name)}\t{printable(reason)}\n" for name, reason in failures))
    else:
        Path(path).unlink(missing_ok=True)


def read_failures(path: Path | str) -> list[tuple[str, str]]:
    """(name, reason) per line of a list written by `write_failures`."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name, _, reason = line.partition("\t")
        rows.append((unprintable(name), unprintable(reason)))
    return rows
