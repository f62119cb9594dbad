"""What every step script shares: one-line errors and exit codes.

The contract with users (DEVELOPERS.md): bad input ends in one clear line on
stderr and a non-zero exit, never a traceback. Step scripts raise `UserError`
anywhere below `main(args)`; `run_cli` turns it into that line.

Importing this module also makes Ctrl-C quiet before `run_cli` starts: a step script
imports it first (its own `# isort: split` import block), so an interrupt while numpy,
torch or onnxruntime are still being imported prints "PROG: interrupted" instead of a
40-line traceback. The process still ends by SIGINT (status 130 in a shell), as Python's
own handling of an uncaught KeyboardInterrupt does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2  # bad input: missing file, wrong format, bad option (argparse uses 2 too)
EXIT_FAILED = 1  # the work ran but some of it failed (e.g. unreadable images were reported)
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def _quiet_keyboard_interrupt(exc_type, exc, tb, _previous=sys.excepthook) -> None:
    """`sys.excepthook` for a KeyboardInterrupt nobody caught (e.g. during a script's imports): one line."""
    if issubclass(exc_type, KeyboardInterrupt):
        print(f"{os.path.basename(sys.argv[0]) or 'python'}: interrupted", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


sys.excepthook = _quiet_keyboard_interrupt


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


def cannot_write(path: os.PathLike | str, err: OSError) -> UserError:
    """The one-line error for an output that cannot be written (read-only folder, disk full, a file
    where a folder should be), naming the path and the system's reason."""
    return UserError(f"cannot write {path}: {err.strerror or first_line(err)}")


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
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (`| head -1`): stop quietly, as a command killed by SIGPIPE does;
        # stdout now points at /dev/null so the interpreter's own flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        # the model library's own error (repvgg_model.errors.ModelError: a bad checkpoint for the torch
        # backend, say): the same one line. Looked up, not imported, so light scripts never load torch.
        model_errors = sys.modules.get("repvgg_model.errors")
        if model_errors is None or not isinstance(err, model_errors.ModelError):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    return int(code or 0)
