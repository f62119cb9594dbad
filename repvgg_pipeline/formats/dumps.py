"""Per-sample output dumps of the inference tools: discovery, bulk reading and writing.

ASCEND_FORMATS.md §3 and §4. Two tools, three encodings, one layout per tool:

- the old `benchmark` tool: `{stem}_1.txt` (one line of space-separated floats) or
  `{stem}_1.bin` (raw float32); the suffix is the 1-based output index;
- ais_bench (and our own runner, which mirrors it): `{stem}_{i}.bin` (raw), `.npy`
  (shape (1, C) or (C,)) or `.txt` (one line per row, each value `%f` followed by a
  space, then a newline); `i` is the 0-based output index.

Readers here are built for 50,000 files: `.bin` files go straight into one
preallocated array with `np.fromfile`, text files are parsed by numpy over their
whole text rather than one Python `float()` per value.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import UserError, fail
from repvgg_pipeline.formats.labels import image_key
from repvgg_pipeline.formats.tensors import is_regular_file

OUTFMTS = ("BIN", "NPY", "TXT")
_SUFFIX_OF_OUTFMT = {"BIN": ".bin", "NPY": ".npy", "TXT": ".txt"}
DUMP_SUFFIXES = tuple(_SUFFIX_OF_OUTFMT.values())


def dump_path(out_dir: Path, stem: str, output_index: int, outfmt: str) -> Path:
    """Where ais_bench puts output `output_index` (0-based) of sample `stem`: `{out_dir}/{stem}_{i}.{bin|npy|txt}`."""
    try:
        suffix = _SUFFIX_OF_OUTFMT[outfmt.upper()]
    except KeyError:
        raise fail(f"unknown output format {outfmt!r}; expected one of {', '.join(OUTFMTS)}") from None
    return Path(out_dir) / f"{stem}_{int(output_index)}{suffix}"


def _text_of(array: np.ndarray) -> bytes:
    """The exact bytes ais_bench's TXT writer produces: per row, `np.savetxt(f, np.c_[row], fmt, newline=" ")` + `\\n`.

    Floats use `%f`, integers `%d`, as ais_bench's `get_ndata_fmt` chooses.
    """
    rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
    fmt = "%f" if np.issubdtype(rows.dtype, np.floating) else "%d"
    buffer = io.BytesIO()
    for row in rows:
        np.savetxt(buffer, np.c_[row], fmt=fmt, newline=" ")
        buffer.write(b"\n")
    return buffer.getvalue()


def write_dump(path: Path, array: np.ndarray) -> None:
    """Write one sample's output atomically, encoding chosen by the suffix (.bin raw, .npy, .txt `%f`).

    A 1-D array is given the leading batch dimension of 1 ais_bench keeps, so every
    dump holds shape (1, C); the dtype is kept as given (the runner passes float32).
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim < 2:
        array = array.reshape(1, -1)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic.atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, array)
    elif suffix == ".txt":
        atomic.write_bytes(path, _text_of(array))
    elif suffix == ".bin":
        atomic.write_bytes(path, np.ascontiguousarray(array).tobytes())
    else:
        raise fail(f"cannot tell the dump format from the file name {path.name!r} (expected .bin, .npy or .txt)")


# ---------------------------------------------------------------- discovery

_DUMP_NAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.(?P<ext>bin|npy|txt)$", re.IGNORECASE)
# Files that share the dump name pattern but are not dumps: the old benchmark's perf files
# (`perf_vision_batchsize_1_device_0.txt`, `PureInfer_perf_of_x_in_device_0.txt`) sit beside its dump folder.
_NOT_DUMPS = re.compile(r"^(perf_|PureInfer_perf)", re.IGNORECASE)


@dataclass(frozen=True)
class DumpSet:
    """The dumps of one output of one run, in a stable order, with the image key of each.

    File names are kept as strings: discovery handles 50,000 of them, and `pathlib` objects
    cost more than the reading itself.
    """

    files: list[str]
    keys: list[str]
    suffix: str  # ".bin", ".npy" or ".txt"
    output_index: int
    where: str  # the folder or summary file they were found through, for messages

    @property
    def paths(self) -> list[Path]:
        return [Path(f) for f in self.files]


def parse_dump_name(name: str) -> tuple[str, int, str] | None:
    """`ILSVRC2012_val_00000001_0.bin` -> (stem, output index, suffix), or None for a name that is not a dump."""
    match = _DUMP_NAME.match(name)
    if match is None or _NOT_DUMPS.match(name) or atomic.TMP_MARKER in name:
        return None
    return match["stem"], int(match["index"]), "." + match["ext"].lower()


def dump_key(name: str) -> str:
    """The image key of a dump: its stem (output suffix removed) up to the first `.`, as in the ModelZoo script."""
    name = os.path.basename(name)
    parsed = parse_dump_name(name)
    return image_key(parsed[0] if parsed else name)


# (full path, stem, output index, suffix) of each dump found
_Found = tuple[str, str, int, str]


def _dumps_in(folder: Path) -> list[_Found]:
    """The dumps directly in `folder`. A dump-named entry that is not a readable regular file (a dangling
    symlink, a FIFO, a folder) is an error naming it: skipping it would score one image fewer unnoticed."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            parsed = parse_dump_name(entry.name)
            if parsed is None:
                continue
            if not is_regular_file(entry):
                kind = "a dangling symlink or symlink loop" if entry.is_symlink() else "not a regular file"
                raise fail(f"{entry.path}: named like a dump but {kind}; remove it or point it at a dump")
            found.append((entry.path, *parsed))
    return found


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder to look into
        return False


def _subfolders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and _is_folder(e))


def _resolve_outfile(name: str, summary_file: Path) -> str:
    """An outfile named in a summary: as written (absolute or relative to the working folder), else relative
    to the summary's folder, else in the dump folder beside it (`{prefix}_summary.json` -> `{prefix}/`)."""
    candidate = Path(name)
    if candidate.is_file():
        return str(candidate)
    base = summary_file.parent
    prefix = summary_file.name[: -len("_summary.json")] if summary_file.name.endswith("_summary.json") else ""
    for alternative in (base / candidate, base / prefix / candidate.name, base / candidate.name):
        if alternative.is_file():
            return str(alternative)
    raise fail(f"{summary_file}: output file {name} listed in filesinfo not found")


def _dumps_from_summary(summary_file: Path) -> list[_Found]:
    from repvgg_pipeline.formats.summary import read_summary  # one module per format; imported where needed

    filesinfo = read_summary(summary_file).get("filesinfo")
    if not isinstance(filesinfo, dict) or not filesinfo:
        raise fail(f"{summary_file}: no 'filesinfo' with output files in this summary")
    found = []
    for sample_id, info in filesinfo.items():
        outfiles = info.get("outfiles") if isinstance(info, dict) else None
        if not isinstance(outfiles, list):
            raise fail(f"{summary_file}: filesinfo entry {sample_id!r} has no 'outfiles' list")
        for name in outfiles:
            parsed = parse_dump_name(os.path.basename(str(name)))
            if parsed is None:
                raise fail(f"{summary_file}: output file {name} is not named like a dump (stem_index.bin|npy|txt)")
            found.append((_resolve_outfile(str(name), summary_file), *parsed))
    return found


def _pick_one(found: list[_Found], where: str, output_index: int | None, suffix: str | None) -> DumpSet:
    if suffix is not None:
        found = [f for f in found if f[3] == suffix]
    if output_index is not None:
        found = [f for f in found if f[2] == output_index]
    if not found:
        wanted = " ".join(x for x in (suffix or "", f"output index {output_index}" if output_index is not None else "")
                          if x)
        raise fail(f"no {wanted + ' ' if wanted else ''}dumps found in {where}")
    suffixes = sorted({f[3] for f in found})
    if len(suffixes) > 1:
        counts = ", ".join(f"{s}: {sum(f[3] == s for f in found)}" for s in suffixes)
        raise fail(f"dumps in several formats in {where} ({counts}); choose one with --dump-format")
    indices = sorted({f[2] for f in found})
    if len(indices) > 1:
        counts = ", ".join(f"_{i}: {sum(f[2] == i for f in found)}" for i in indices[:4])
        more = ", ..." if len(indices) > 4 else ""
        raise fail(f"dumps of several outputs in {where} ({counts}{more}); choose one with --output-index")
    found.sort(key=lambda f: f[1])
    keys = [stem.split(".", 1)[0] for _, stem, _, _ in found]  # labels.image_key of a name without folders
    first_of: dict[str, str] = {}
    for key, entry in zip(keys, found, strict=True):
        if key in first_of:
            raise fail(f"two dumps for image {key}: {first_of[key]} and {entry[0]}")
        first_of[key] = entry[0]
    return DumpSet([f[0] for f in found], keys, suffixes[0], indices[0], where)


def find_dumps(path: Path, output_index: int | None = None, suffix: str | None = None) -> DumpSet:
    """Find the dumps of one output under `path` without being told the tool or format.

    `path` is a folder holding dumps, a folder with exactly one sub-folder holding them
    (ais_bench's timestamped `%Y_%m_%d-%H_%M_%S/`, the benchmark's `dumpOutput_device0/`),
    or an ais_bench summary json whose `filesinfo` lists them. When dumps of several
    formats or outputs are found the caller must choose (`suffix`, `output_index`):
    picking one silently could score the wrong output.
    """
    path = Path(path)
    if suffix is not None and not suffix.startswith("."):
        suffix = "." + suffix.lower()
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise fail(f"{path} is a file; expected a folder of dumps or an ais_bench summary json")
        return _pick_one(_dumps_from_summary(path), str(path), output_index, suffix)
    if not path.is_dir():
        raise fail(f"dump folder not found: {path}" if not path.exists() else
                   f"{path} is neither a folder of dumps nor a summary json")
    found = _dumps_in(path)
    if found:
        return _pick_one(found, str(path), output_index, suffix)
    holding = [(sub, dumps) for sub in _subfolders(path) if (dumps := _dumps_in(sub))]
    if len(holding) > 1:
        names = ", ".join(sub.name for sub, _ in holding[:5])
        raise fail(f"several dump folders under {path} ({names}); pass the one to score")
    if holding:
        return _pick_one(holding[0][1], str(holding[0][0]), output_index, suffix)
    summaries = sorted(path.glob("*_summary.json")) + sorted(path.glob("sumary.json"))
    if len(summaries) == 1:
        return _pick_one(_dumps_from_summary(summaries[0]), str(summaries[0]), output_index, suffix)
    raise fail(f"no dumps found in {path} (looked for {{stem}}_{{i}}.bin/.npy/.txt here and one folder down)")


# ---------------------------------------------------------------- bulk reading

def _progress(paths: Sequence[str], what: str):
    """tqdm on stderr, shown only to a person at a terminal (disable=None), so logs and pipes stay clean."""
    from tqdm import tqdm

    return tqdm(paths, desc=what, unit="file", file=sys.stderr, disable=None, mininterval=0.5, leave=False)


def _name_the_odd_dump(paths: Sequence[str], count_of, unit: str, expected: int | None, given: str) -> UserError:
    """The error for dumps of unequal size, naming the file that differs from the rest.

    Only called once a mismatch is seen, so its extra pass over all files costs nothing on
    good input. The expected count is `expected` (from --num-classes) when given, else the
    count most dumps share: a truncated *first* dump must not make every other one look wrong.
    """
    counts = [count_of(path) for path in paths]
    if expected is None:
        expected, agreeing = Counter(counts).most_common(1)[0]
        why = f"like {agreeing} of the {len(paths)} dumps"
    else:
        why = given
    for path, count in zip(paths, counts, strict=True):
        if count != expected:
            return fail(f"{path}: {count} {unit}, expected {expected} ({why})")
    return fail(f"dumps in {os.path.dirname(paths[0]) or '.'} changed size while being read")


def _read_bin(paths: Sequence[str], dtype: np.dtype, num_classes: int | None) -> np.ndarray:
    itemsize = dtype.itemsize

    def size_error() -> UserError:
        return _name_the_odd_dump(paths, lambda p: os.stat(p).st_size, "bytes",
                                  num_classes * itemsize if num_classes else None,
                                  f"--num-classes {num_classes} x {itemsize}-byte {dtype.name}")

    first_size = os.stat(paths[0]).st_size
    classes = num_classes or first_size // itemsize
    if classes == 0 or first_size != classes * itemsize:
        common = Counter(os.stat(p).st_size for p in paths).most_common(1)[0][0] if len(paths) > 1 else first_size
        if num_classes or (common != first_size and common and common % itemsize == 0):
            raise size_error()  # the first dump is the odd one: name it against the others
        raise fail(f"{paths[0]}: {first_size} bytes is not a whole number of {dtype.name} values")
    row_bytes = classes * itemsize
    out = np.empty((len(paths), classes), dtype=dtype)
    view = memoryview(out).cast("B")
    for row, path in enumerate(_progress(paths, "reading .bin dumps")):
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.readv(fd, [view[row * row_bytes:(row + 1) * row_bytes]])
            extra = os.read(fd, 1) if got == row_bytes else b""
        finally:
            os.close(fd)
        if got != row_bytes or extra:
            raise size_error()
    return out


def _npy_count(path: str) -> int:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[-1])
    except (OSError, ValueError, IndexError):
        return -1


def _txt_count(path: str) -> int:
    with open(path, "rb") as handle:
        return len(handle.read().split())


def _read_npy(paths: Sequence[str], num_classes: int | None) -> np.ndarray:
    out: np.ndarray | None = None
    for row, path in enumerate(_progress(paths, "reading .npy dumps")):
        try:
            array = np.load(path, allow_pickle=False)  # never unpickle objects from input files
        except (OSError, ValueError) as err:
            raise fail(f"{path}: not a readable .npy array ({err})") from None
        real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)  # not complex
        if not real or array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[0] != 1):
            raise fail(f"{path}: expected numbers of shape (1, C) or (C,), got {array.dtype} {array.shape}")
        if out is None:
            out = np.empty((len(paths), num_classes or array.shape[-1]), dtype=np.float32)
        if array.shape[-1] != out.shape[1]:
            raise _name_the_odd_dump(paths, _npy_count, "values", num_classes, f"--num-classes {num_classes}")
        out[row] = array.reshape(-1)
    assert out is not None
    return out


def _read_txt(paths: Sequence[str], num_classes: int | None) -> np.ndarray:
    out: np.ndarray | None = None
    for row, path in enumerate(_progress(paths, "reading .txt dumps")):
        with open(path, "rb") as handle:
            text = handle.read()
        try:
            values = np.fromstring(text, dtype=np.float32, sep=" ") if text.strip() else np.empty(0, np.float32)
        except ValueError:
            raise fail(f"{path}: not a list of numbers separated by white space") from None
        if out is None:
            if values.size == 0:
                raise fail(f"{path}: empty dump")
            out = np.empty((len(paths), num_classes or values.size), dtype=np.float32)
        if values.size != out.shape[1]:
            raise _name_the_odd_dump(paths, _txt_count, "values", num_classes, f"--num-classes {num_classes}")
        out[row] = values
    assert out is not None
    return out


def read_dumps(dumps: DumpSet, dtype: str = "float32", num_classes: int | None = None) -> np.ndarray:
    """All dumps of `dumps` as one (N, C) float32 array, rows in `dumps.files` order.

    `dtype` is the element type of raw `.bin` dumps (float32 unless the OM was built with fp16
    outputs); `.npy` carries its own, text is parsed. Every dump must hold the same number of
    values (`num_classes`, else that of the first dump); a dump that does not is an error naming it.
    """
    if not dumps.files:
        raise fail(f"no dumps found in {dumps.where}")
    if num_classes is not None and num_classes < 1:
        raise fail(f"--num-classes must be at least 1, got {num_classes}")
    if dumps.suffix == ".bin":
        logits = _read_bin(dumps.files, np.dtype(dtype), num_classes)
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)
    if dumps.suffix == ".npy":
        return _read_npy(dumps.files, num_classes)
    return _read_txt(dumps.files, num_classes)
