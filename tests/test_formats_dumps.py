"""Dump files: exact bytes as ais_bench writes them, discovery in every layout, bulk reading and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats.dumps import (
    OUTFMTS,
    dump_key,
    dump_path,
    find_dumps,
    parse_dump_name,
    read_dumps,
    write_dump,
)

STEMS = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 7)]


def exact_logits(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    """Multiples of 1/64: exact in float32 and in `%f` text, so every encoding must read back identically."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-640, 640, size=(rows, classes)) / 64).astype(np.float32)


def write_set(folder: Path, logits: np.ndarray, outfmt: str, index: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, row in zip(STEMS, logits, strict=False):
        path = dump_path(folder, stem, index, outfmt)
        write_dump(path, row[None, :])
        paths.append(path)
    return paths


def test_dump_path_names_match_ais_bench(tmp_path):
    assert dump_path(tmp_path, "a_b", 0, "BIN") == tmp_path / "a_b_0.bin"
    assert dump_path(tmp_path, "x", 2, "npy").name == "x_2.npy"
    assert dump_path(tmp_path, "x", 0, "TXT").name == "x_0.txt"
    assert OUTFMTS == ("BIN", "NPY", "TXT")
    with pytest.raises(UserError):
        dump_path(tmp_path, "x", 0, "CSV")


def test_txt_layout_is_ais_bench_savetxt(tmp_path):
    path = tmp_path / "img_0.txt"
    write_dump(path, np.array([[1.5, -2.0, 3.25]], dtype=np.float32))
    # ais_bench: np.savetxt(f, np.c_[row], fmt="%f", newline=" ") then b"\n", per row
    assert path.read_bytes() == b"1.500000 -2.000000 3.250000 \n"


def test_bin_and_npy_keep_batch_dim_and_dtype(tmp_path):
    row = np.arange(5, dtype=np.float32)
    write_dump(tmp_path / "a_0.bin", row)
    write_dump(tmp_path / "a_0.npy", row)
    assert np.array_equal(np.fromfile(tmp_path / "a_0.bin", dtype=np.float32), row)
    loaded = np.load(tmp_path / "a_0.npy")
    assert loaded.shape == (1, 5) and loaded.dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_dump_names_and_keys():
    assert parse_dump_name("ILSVRC2012_val_00000001_0.bin") == ("ILSVRC2012_val_00000001", 0, ".bin")
    assert parse_dump_name("x_1.TXT") == ("x", 1, ".txt")
    assert parse_dump_name("perf_vision_batchsize_1_device_0.txt") is None
    assert parse_dump_name("PureInfer_perf_of_m_in_device_0.txt") is None
    assert parse_dump_name("a.bin") is None
    assert dump_key("ILSVRC2012_val_00000001_0.bin") == "ILSVRC2012_val_00000001"
    assert dump_key("ILSVRC2012_val_00000001.JPEG_1.txt") == "ILSVRC2012_val_00000001"


@pytest.mark.parametrize("outfmt", OUTFMTS)
def test_every_encoding_reads_back_the_same_logits(tmp_path, outfmt):
    logits = exact_logits(len(STEMS), 1000)
    write_set(tmp_path, logits, outfmt)
    dumps = find_dumps(tmp_path)
    assert dumps.keys == STEMS and dumps.output_index == 0 and dumps.suffix == "." + outfmt.lower()
    assert np.array_equal(read_dumps(dumps), logits)


def test_old_benchmark_text_and_1d_npy(tmp_path):
    logits = exact_logits(3, 1001, seed=1)
    for stem, row in zip(STEMS, logits, strict=False):  # benchmark: one line, values separated by a space
        (tmp_path / f"{stem}_1.txt").write_text(" ".join(repr(float(v)) for v in row) + "\n")
    dumps = find_dumps(tmp_path)
    assert dumps.output_index == 1 and np.array_equal(read_dumps(dumps), logits)
    npy = tmp_path / "npy"
    npy.mkdir()
    for stem, row in zip(STEMS, logits, strict=False):
        np.save(npy / f"{stem}_0.npy", row)  # shape (C,)
    assert np.array_equal(read_dumps(find_dumps(npy)), logits)


def test_float16_bin(tmp_path):
    logits = exact_logits(4, 1000)
    for stem, row in zip(STEMS, logits, strict=False):
        row.astype(np.float16).tofile(tmp_path / f"{stem}_0.bin")
    assert np.array_equal(read_dumps(find_dumps(tmp_path), dtype="float16"), logits)


def test_found_in_timestamped_subfolder_and_perf_files_ignored(tmp_path):
    logits = exact_logits(4, 10)
    write_set(tmp_path / "2026_01_02-03_04_05", logits, "BIN")
    (tmp_path / "perf_vision_batchsize_1_device_0.txt").write_text("[e2e] throughputRate: 1, latency: 1\n")
    (tmp_path / ".x_0.bin.tmp-abc").write_bytes(b"junk")
    dumps = find_dumps(tmp_path)
    assert Path(dumps.where).name == "2026_01_02-03_04_05"
    assert np.array_equal(read_dumps(dumps), logits)


def test_found_through_summary_filesinfo(tmp_path, monkeypatch):
    logits = exact_logits(5, 10)
    paths = write_set(tmp_path / "out" / "bs1", logits, "NPY")
    # ais_bench records the outfiles as it wrote them: here relative to the folder it ran in
    filesinfo = {str(i): {"infiles": [f"prep/{STEMS[i]}.bin"], "outfiles": [str(p.relative_to(tmp_path))]}
                 for i, p in enumerate(paths)}
    summary = tmp_path / "out" / "bs1_summary.json"
    summary.write_text(json.dumps({"filesinfo": filesinfo, "throughput": 1.0}))
    monkeypatch.chdir(tmp_path / "out")  # not where ais_bench ran: found beside the summary instead
    dumps = find_dumps(summary)
    assert dumps.keys == STEMS[:5]
    assert np.array_equal(read_dumps(dumps), logits)


def test_ambiguous_layouts_are_errors(tmp_path):
    logits = exact_logits(2, 10)
    write_set(tmp_path / "a", logits, "BIN")
    write_set(tmp_path / "b", logits, "BIN")
    with pytest.raises(UserError, match="several dump folders"):
        find_dumps(tmp_path)
    write_set(tmp_path / "a", logits, "TXT")
    with pytest.raises(UserError, match="several formats"):
        find_dumps(tmp_path / "a")
    assert find_dumps(tmp_path / "a", suffix="txt").suffix == ".txt"
    write_set(tmp_path / "b", logits, "BIN", index=1)
    with pytest.raises(UserError, match="several outputs"):
        find_dumps(tmp_path / "b")
    assert find_dumps(tmp_path / "b", output_index=1).output_index == 1
    (tmp_path / "c").mkdir()
    write_set(tmp_path / "c", logits, "BIN")
    np.zeros(10, np.float32).tofile(tmp_path / "c" / f"{STEMS[0]}.JPEG_0.bin")
    with pytest.raises(UserError, match="two dumps for image"):
        find_dumps(tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no dumps found"):
        find_dumps(tmp_path / "empty")
    with pytest.raises(UserError, match="not found"):
        find_dumps(tmp_path / "missing")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bin", None, "bytes, expected 40"),
    ("txt", b"1.0 2.0 abc\n", "not a list of numbers"),
    ("txt", b"1 2 3\n", "3 values, expected 10"),
    ("txt", b"\n", "empty dump"),
    ("npy", None, "expected numbers of shape"),
])
def test_bad_dump_is_named(tmp_path, name, content, message):
    logits = exact_logits(3, 10)
    paths = write_set(tmp_path, logits, name.upper())
    bad = paths[-1] if name != "txt" or content != b"\n" else paths[0]
    if name == "bin":
        bad.write_bytes(bad.read_bytes() + b"\0\0\0\0")
    elif name == "npy":
        np.save(bad, np.array(["a", "b"]))
    else:
        bad.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_dumps(find_dumps(tmp_path))
    assert bad.name in str(info.value)
