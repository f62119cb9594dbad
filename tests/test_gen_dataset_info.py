"""gen_dataset_info.py and the .info format: ModelZoo command lines, natural order, real sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats.info import InfoEntry, read_info, write_info
from repvgg_pipeline.formats.tensors import write_tensor
from tests.conftest import assert_one_line_error, run_script


def make_bins(folder, names, shape=(3, 8, 6), dtype=np.float32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        write_tensor(folder / name, (rng.random(shape) * 200).astype(dtype))
    return folder


def test_info_round_trip_with_spaces(tmp_path):
    entries = [InfoEntry(0, "a dir/with spaces 1.bin", 224, 224), InfoEntry(1, "ünï/画像.bin", 500, 375)]
    write_info(tmp_path / "x.info", entries)
    assert (tmp_path / "x.info").read_text(encoding="utf-8").splitlines()[0] == "0 a dir/with spaces 1.bin 224 224"
    assert read_info(tmp_path / "x.info") == entries


@pytest.mark.parametrize("line", ["0 a.bin 224", "x a.bin 224 224", "0 a.bin 224 h", "0 224 224"])
def test_malformed_info_line_names_file_and_line(tmp_path, line):
    (tmp_path / "bad.info").write_text(f"0 ok.bin 1 1\n{line}\n")
    with pytest.raises(UserError, match=r"bad\.info:2:"):
        read_info(tmp_path / "bad.info")


def test_bin_mode_modelzoo_command_line_natural_order(tmp_path):
    folder = make_bins(tmp_path / "prep", ["img10.bin", "img2.bin", "img1.bin", "Img3.bin"])
    (folder / ".img4.bin.tmp-xyz").write_bytes(b"partial")  # an interrupted write is not an input
    (folder / "val_label.txt").write_text("img1.JPEG 0\n")
    proc = run_script("gen_dataset_info.py", "bin", folder, tmp_path / "out.info", 6, 8)
    assert proc.returncode == 0, proc.stderr
    entries = read_info(tmp_path / "out.info")
    assert [e.index for e in entries] == [0, 1, 2, 3]
    assert [e.path for e in entries] == [str(folder / n) for n in ["img1.bin", "img2.bin", "Img3.bin", "img10.bin"]]
    assert {(e.width, e.height) for e in entries} == {(6, 8)}
    first = (tmp_path / "out.info").read_bytes()
    assert run_script("gen_dataset_info.py", "bin", folder, tmp_path / "out.info", 6, 8).returncode == 0
    assert (tmp_path / "out.info").read_bytes() == first  # same data, same file


def test_bin_mode_accepts_uint8_tensors(tmp_path):
    folder = make_bins(tmp_path / "u8", ["a.bin", "b.bin"], shape=(8, 6, 3), dtype=np.uint8)
    proc = run_script("gen_dataset_info.py", "bin", folder, tmp_path / "u8.info", 6, 8)
    assert proc.returncode == 0 and "uint8 8x6x3" in proc.stdout


def test_bin_mode_errors_are_one_line(tmp_path):
    folder = make_bins(tmp_path / "prep", ["a.bin"])
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", folder, tmp_path / "o.info", 224, 224), 2,
                          "a.bin: 576 bytes, expected 602112 (float32 3x224x224) or 150528 (uint8 224x224x3)")
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", folder, tmp_path / "o.info"), 2, "width height")
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", tmp_path / "nope", tmp_path / "o.info", 6, 8),
                          2, "not found")
    (tmp_path / "none").mkdir()
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", tmp_path / "none", tmp_path / "o.info", 6, 8),
                          2, "no .bin files")
    make_bins(folder, ["b.bin"], shape=(8, 6, 3), dtype=np.uint8)
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", folder, tmp_path / "o.info", 6, 8), 2,
                          "one layout per folder")
    (tmp_path / "file").write_text("x")
    make_bins(tmp_path / "ok", ["a.bin"])
    assert_one_line_error(run_script("gen_dataset_info.py", "bin", tmp_path / "ok", tmp_path / "file" / "o.info",
                                     6, 8), 2, "cannot write")


def test_jpg_mode_real_sizes_without_decoding(shared_data, tmp_path):
    src = shared_data / "imagenet_val_fullsize20"
    proc = run_script("gen_dataset_info.py", "jpg", src, tmp_path / "jpg.info")
    assert proc.returncode == 0, proc.stderr
    entries = read_info(tmp_path / "jpg.info")
    images = sorted(src.glob("*.JPEG"))
    assert [e.path for e in entries] == [str(src / p.name) for p in images]
    assert [(e.width, e.height) for e in entries] == [Image.open(p).size for p in images]
    assert (2816, 2112) in {(e.width, e.height) for e in entries}

    # a JPEG whose pixel data is cut off still has its size in the header: listed, so nothing was decoded
    folder = tmp_path / "imgs"
    folder.mkdir()
    data = images[0].read_bytes()
    (folder / "cut.JPEG").write_bytes(data[: len(data) // 3])
    (folder / "junk.jpg").write_text("not an image")
    proc = run_script("gen_dataset_info.py", "jpg", folder, tmp_path / "cut.info")
    assert proc.returncode == 1 and "junk.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert [(e.path, e.width, e.height) for e in read_info(tmp_path / "cut.info")] == \
        [(str(folder / "cut.JPEG"), *Image.open(images[0]).size)]
    assert_one_line_error(run_script("gen_dataset_info.py", "jpg", folder, tmp_path / "x.info", 224, 224), 2,
                          "takes no width height")
