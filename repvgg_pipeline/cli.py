"""What every step script shares: one-line errors and exit codes.

The contract with users (DEVELOPERS.md): bad input ends in one clear line on
stderr and a non-zero exit, never a traceback. Step scripts raise `UserError`
anywhere below `main(args)`; `run_cli` turns it into that line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2  # bad input: missing file, wrong format, bad option (argparse uses 2 too)
EXIT_FAILED = 1  # the work ran but some of it failed (e.g. unreadable images were reported)
EXIT_INTERRUPTED = 130


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total): the default
    number of preprocessing workers and of ONNX Runtime threads."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def first_line(err: BaseException, with_type: bool = False, limit: int | None = None) -> str:
    """An exception condensed for a one-line message: its first line of text, or its type when it has none.

    Library errors (Pillow, ONNX Runtime, torch) often span many lines; the contract is one line.
    `with_type` prefixes the type ("UnidentifiedImageError: ..."), `limit` caps the length.
    """
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type and text:
        text = f"{type(err).__name__}: {text}"
    return (text or type(err).__name__)[:limit]


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit code `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = EXIT_USAGE) -> UserError:
    """Build a `UserError` so call sites read `raise fail("...")`."""
    return UserError(message, exit_code)


def run_cli(
    get_args_parser: Callable[[], argparse.ArgumentParser],
    main: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv`, run `main`, and map errors to one line on stderr plus an exit code."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        code = main(args)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)
