"""The .bin tensor format: raw float32 CHW or uint8 HWC, size implies layout, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import UserError
from repvgg_pipeline.formats import tensors


def test_sizes_and_layout_detection():
    assert tensors.tensor_nbytes(tensors.FLOAT32_CHW, 224, 224) == 602_112
    assert tensors.tensor_nbytes(tensors.UINT8_HWC, 224, 224) == 150_528
    assert tensors.detect_layout(602_112, 224, 224) == "float32"
    assert tensors.detect_layout(150_528, 224, 224) == "uint8"
    assert tensors.detect_layout(1_228_800, 320, 320) == "float32"
    assert tensors.detect_layout(602_112, 320, 320) is None


def test_float32_round_trip_is_raw_c_order(tmp_path):
    array = np.random.default_rng(1).standard_normal((3, 5, 7)).astype(np.float32)
    tensors.write_tensor(tmp_path / "a.bin", array)
    assert (tmp_path / "a.bin").read_bytes() == array.tobytes()  # no header: what ais_bench feeds the model
    back = tensors.read_tensor(tmp_path / "a.bin", "float32", 5, 7)
    assert back.shape == (3, 5, 7) and back.dtype == np.float32 and np.array_equal(back, array)
    back[0, 0, 0] = 1  # writable


def test_uint8_round_trip_hwc_and_non_contiguous_input(tmp_path):
    chw = np.arange(3 * 4 * 6, dtype=np.uint8).reshape(3, 4, 6)
    hwc = chw.transpose(1, 2, 0)  # a view: written in its logical (H, W, C) order
    tensors.write_tensor(tmp_path / "u.bin", hwc)
    assert (tmp_path / "u.bin").read_bytes() == np.ascontiguousarray(hwc).tobytes()
    assert np.array_equal(tensors.read_tensor(tmp_path / "u.bin", "uint8", 4, 6), hwc)


def test_read_into_a_batch_row_fills_only_that_row(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 5, 7)).astype(np.float32) for _ in range(2)]
    for i, array in enumerate(arrays):
        tensors.write_tensor(tmp_path / f"{i}.bin", array)
    batch = np.full((3, 3, 5, 7), np.nan, dtype=np.float32)
    for row in range(2):
        assert np.shares_memory(tensors.read_tensor(tmp_path / f"{row}.bin", "float32", 5, 7, out=batch[row]), batch)
    assert np.array_equal(batch[0], arrays[0]) and np.array_equal(batch[1], arrays[1])
    assert np.isnan(batch[2]).all()  # untouched
    with pytest.raises(ValueError, match="C-contiguous"):
        tensors.read_tensor(tmp_path / "0.bin", "float32", 5, 7, out=batch[:, 0])  # wrong shape
    with pytest.raises(ValueError):
        tensors.read_tensor(tmp_path / "0.bin", "float32", 5, 7, out=np.empty((3, 5, 7), dtype=np.float64))
    (tmp_path / "short.bin").write_bytes(b"\0" * 12)
    with pytest.raises(UserError, match="12 bytes, expected 420"):
        tensors.read_tensor(tmp_path / "short.bin", "float32", 5, 7, out=batch[2])


def test_wrong_size_names_path_and_expectation(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\0" * 100)
    with pytest.raises(UserError, match=r"x\.bin: 100 bytes, expected 602112 \(float32 3x224x224\)"):
        tensors.read_tensor(tmp_path / "x.bin", "float32", 224, 224)
    with pytest.raises(UserError, match="cannot read tensor"):
        tensors.read_tensor(tmp_path / "missing.bin", "uint8", 2, 2)


def test_bad_arrays_are_refused_and_leave_nothing(tmp_path):
    with pytest.raises(ValueError):
        tensors.write_tensor(tmp_path / "d.bin", np.zeros((3, 4, 4), dtype=np.float64))
    with pytest.raises(ValueError):
        tensors.write_tensor(tmp_path / "e.bin", np.zeros((4, 4), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    tensors.write_tensor(tmp_path / "t.bin", np.ones((3, 2, 2), np.float32))
    old = (tmp_path / "t.bin").read_bytes()

    class Boom(Exception):
        pass

    def exploding_view(*_args):
        raise Boom

    monkeypatch.setattr(tensors, "memoryview", exploding_view, raising=False)
    with pytest.raises(Boom):
        tensors.write_tensor(tmp_path / "t.bin", np.zeros((3, 2, 2), np.float32))
    assert (tmp_path / "t.bin").read_bytes() == old
    assert not any(atomic.is_temporary(p) for p in tmp_path.iterdir())
