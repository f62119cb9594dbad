"""The one-line error contract's helpers."""

from repvgg_pipeline.cli import first_line, usable_cores


def test_first_line_keeps_one_line_of_a_library_error():
    err = ValueError("bad header\n  at byte 12\n  in chunk IHDR")
    assert first_line(err) == "bad header"
    assert first_line(err, with_type=True) == "ValueError: bad header"
    assert first_line(OSError()) == "OSError"
    assert first_line(OSError(), with_type=True) == "OSError"
    assert first_line(RuntimeError("x" * 500), limit=200) == "x" * 200


def test_usable_cores_is_positive():
    assert usable_cores() >= 1
