"""The `.bin` input tensor: one preprocessed image as raw bytes, no header.

ASCEND_FORMATS.md §2 and §4. ais_bench and the old `benchmark` tool read an input
file as the raw bytes of the model input, so the file carries no shape or dtype;
both are implied by its size. Two layouts exist:

- `FLOAT32_CHW`: the normalised float32 tensor in C,H,W order (3x224x224 = 602,112 bytes),
  for an OM model converted straight from the ONNX export;
- `UINT8_HWC`: the cropped RGB pixels as packed uint8 H,W,C (224x224x3 = 150,528 bytes),
  for an OM model with AIPP doing the normalisation on the device.

Because the size alone tells the two apart at a given height and width, `detect_layout`
lets a reader accept either without an extra option.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import fail
from repvgg_pipeline.dataset import natural_key

FLOAT32_CHW = "float32"
UINT8_HWC = "uint8"
LAYOUTS = (FLOAT32_CHW, UINT8_HWC)

_DTYPES = {FLOAT32_CHW: np.dtype(np.float32), UINT8_HWC: np.dtype(np.uint8)}


def layout_dtype(layout: str) -> np.dtype:
    """The numpy dtype stored by `layout` (raises `UserError` for an unknown layout)."""
    try:
        return _DTYPES[layout]
    except KeyError:
        raise fail(f"unknown tensor layout {layout!r} (expected one of {', '.join(LAYOUTS)})") from None


def layout_shape(layout: str, height: int, width: int, channels: int = 3) -> tuple[int, int, int]:
    """The array shape of one image in `layout`: (C, H, W) for float32, (H, W, C) for uint8."""
    layout_dtype(layout)
    return (channels, height, width) if layout == FLOAT32_CHW else (height, width, channels)


def tensor_nbytes(layout: str, height: int, width: int, channels: int = 3) -> int:
    """Size in bytes of one image's `.bin` file in `layout`."""
    return layout_dtype(layout).itemsize * channels * height * width


def describe(layout: str, height: int, width: int, channels: int = 3) -> str:
    """Human-readable layout, e.g. 'float32 3x224x224' or 'uint8 224x224x3', for messages."""
    return f"{layout} {'x'.join(map(str, layout_shape(layout, height, width, channels)))}"


def _layout_of(array: np.ndarray) -> str:
    """Which layout an in-memory array is in, judged by dtype and where the 3-or-1 channel axis is."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D image tensor, got shape {array.shape}")
    if array.dtype == np.float32:
        return FLOAT32_CHW
    if array.dtype == np.uint8:
        return UINT8_HWC
    raise ValueError(f"expected float32 (C,H,W) or uint8 (H,W,C), got {array.dtype}")


def write_tensor(path: Path | str, array: np.ndarray) -> None:
    """Write one image tensor as raw bytes, atomically (no header, C order).

    `array` is float32 (C,H,W) or uint8 (H,W,C); the dtype decides the layout.
    """
    _layout_of(array)
    atomic.write_bytes(path, memoryview(np.ascontiguousarray(array)).cast("B"))


def read_tensor(path: Path | str, layout: str, height: int, width: int, channels: int = 3,
                out: np.ndarray | None = None) -> np.ndarray:
    """Read one `.bin` file: float32 (C,H,W) or uint8 (H,W,C), into `out` when given.

    `out` (C-contiguous, of the tensor's shape and dtype, e.g. one row of a batch) receives
    the bytes straight from the file: no intermediate copy, which is most of a runner's
    host-side cost per image. Raises `UserError` "<path>: N bytes, expected M (float32
    3x224x224)" when the size does not match, which is how a tensor of the wrong layout or
    resolution shows up.
    """
    path = Path(path)
    expected = tensor_nbytes(layout, height, width, channels)
    shape, dtype = layout_shape(layout, height, width, channels), layout_dtype(layout)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}, got {out.dtype} {out.shape}")
    buffer = memoryview(out).cast("B")
    try:
        with open(path, "rb", buffering=0) as source:
            size = os.fstat(source.fileno()).st_size
            if size != expected:
                raise fail(f"{path}: {size} bytes, expected {expected} ({describe(layout, height, width, channels)})")
            filled = 0
            while filled < expected:  # a raw read may return less than asked for
                got = source.readinto(buffer[filled:])
                if not got:
                    break
                filled += got
    except OSError as err:
        raise fail(f"cannot read tensor {path}: {err.strerror or err}") from None
    if filled != expected:
        raise fail(f"{path}: shrank to {filled} bytes while being read, expected {expected}")
    return out


def list_tensor_files(directory: Path | str) -> list[str]:
    """Names of the `.bin` tensors in `directory`, natural-sorted as ais_bench orders its inputs.

    Hidden files and leftovers of interrupted atomic writes are not tensors. Raises
    `UserError` when the folder is missing or holds none, and when a `.bin` entry is not a
    readable regular file (a dangling symlink, a symlink loop, a FIFO, a folder): dropping it
    silently would score one image fewer without a word, reading a FIFO would hang.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise fail(f"folder not found: {directory}")
    names, odd = [], []
    with os.scandir(directory) as entries:
        for e in entries:
            if e.name.lower().endswith(".bin") and not e.name.startswith(".") and not atomic.is_temporary(e.name):
                (names if is_regular_file(e) else odd).append(e.name)
    if odd:
        odd.sort(key=natural_key)
        raise fail(f"{directory / odd[0]} is not a regular file ({_not_a_file_reason(directory / odd[0])})"
                   + (f", nor are {len(odd) - 1} other .bin entries" if len(odd) > 1 else "")
                   + "; remove it or point it at a tensor")
    if not names:
        raise fail(f"no .bin files in {directory}")
    return sorted(names, key=natural_key)


def is_regular_file(entry: os.DirEntry) -> bool:
    """`entry.is_file()` (following symlinks) that says False for a symlink loop instead of raising ELOOP."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _not_a_file_reason(path: Path) -> str:
    """Why `path` is not a regular file, for a message: dangling symlink, symlink loop, FIFO, folder..."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if os.path.islink(path):
            return "a symlink loop" if err.errno == errno.ELOOP else f"a dangling symlink to {os.readlink(path)}"
        return err.strerror or str(err)
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device or socket"


def detect_layout(nbytes: int, height: int, width: int, channels: int = 3) -> str | None:
    """The layout whose size at this resolution is `nbytes`, or None if neither matches."""
    for layout in LAYOUTS:
        if tensor_nbytes(layout, height, width, channels) == nbytes:
            return layout
    return None
