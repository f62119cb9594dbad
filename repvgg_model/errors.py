"""The model library's own errors: bad checkpoints and bad model options, as one-line messages.

`repvgg_model` stands on its own (torch, onnx) and does not import the pipeline's CLI layer;
the step scripts turn a `ModelError` into their one-line error and exit code 2.
"""

from __future__ import annotations


class ModelError(Exception):
    """A problem with the user's model input (variant, options, export target); the message is one line."""

    exit_code = 2  # what a command line should exit with: bad input, like argparse


class CheckpointError(ModelError):
    """A checkpoint that cannot be used: unreadable, refused as unsafe, damaged weights, wrong shapes."""


def condense(err: BaseException, limit: int = 200) -> str:
    """A library error (torch, onnx) as one line of at most `limit` characters: its first line, or its type."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]
