"""What a step script checks before it writes or deletes anything: the rules that keep a user's files safe.

- An output never replaces one of the run's inputs (`refuse_overwriting_inputs`):
  `postprocess.py dumps labels.txt labels.txt` would otherwise turn the label file into result.json.
- infer.py's dump folder never is, nor contains, its inputs (`refuse_inputs_inside`): inputs
  named like dumps (`n01440764_10026.bin` is `{stem}_{i}.bin`) were once taken for old dumps
  and deleted.
- infer.py deletes only the dumps it wrote. Each dump folder carries a manifest
  (`.infer_dumps.json`, hidden, so postprocess.py and ais_bench's layout ignore it) listing the
  dump names infer.py claimed there; a rerun removes only those (`claim_dump_folder`). A
  dump-named file it did not list (an earlier ais_bench run, a copy by hand) stops the run
  with its name: deleting it would lose someone's data, keeping it would have it scored with
  the new dumps.
- A batch whose buffers cannot fit in memory is refused before anything is allocated
  (`check_batch_memory`), and a dynamic-batch model is not padded to a batch larger than the
  input count (`fit_batch_to_inputs`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import UserError, cannot_write, fail
from repvgg_pipeline.formats.dumps import parse_dump_name

MANIFEST_NAME = ".infer_dumps.json"
_MANIFEST_TOOL = "infer.py"
# the runner's two batch buffers (one read while the other computes) plus at least one input-sized
# copy inside the backend; the model's activations come on top, so this is a floor, not an estimate
BATCH_COPIES = 3


def _identity(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refuse_overwriting_inputs(output: Path | str, inputs: Iterable[tuple[str, Path | str]]) -> None:
    """Raise `UserError` when `output` already exists and is one of `inputs` ((what, path) pairs).

    Compared by device and inode, so a symlink or hard link to an input counts as the input.
    Nothing is stat'ed unless `output` exists (the usual first run costs nothing).
    """
    out_id = _identity(output)
    if out_id is None:
        return
    for what, path in inputs:
        if _identity(path) == out_id:
            same = "" if os.path.abspath(output) == os.path.abspath(path) else f" ({path})"
            raise fail(f"output {output} is the {what}{same}; refusing to overwrite an input: give another output")


def refuse_inputs_inside(folder: Path | str, sources: Iterable[Path | str], what: str = "output folder") -> None:
    """Raise `UserError` when `folder` is one of `sources` (files or folders) or holds one, at any depth."""
    real = Path(os.path.realpath(folder))
    for source in sources:
        resolved = Path(os.path.realpath(source))
        if resolved == real or real in resolved.parents:
            where = "is" if resolved == real else "contains"
            raise fail(f"{what} {folder} {where} the input {source}: outputs there could replace or be mixed "
                       f"with the inputs; choose another output folder")


def _read_manifest(folder: Path) -> set[str]:
    """The dump names infer.py recorded writing in `folder` (empty when it never wrote there)."""
    path = folder / MANIFEST_NAME
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return set()
    except OSError as err:
        raise fail(f"cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise fail(f"{path} is not a file infer.py wrote (not a regular file); remove it or choose another folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"cannot read {path} ({type(err).__name__}); remove it or choose another folder") from None
    names = data.get("dumps") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise fail(f"{path} is not an infer.py dump manifest; remove it or choose another folder")
    return {n for n in names if "/" not in n and parse_dump_name(n) is not None}


def _temporary_target(name: str) -> str | None:
    """`.x_0.bin.tmp-ab12` (an interrupted atomic write) -> `x_0.bin`, else None."""
    if not (atomic.is_temporary(name) and name.startswith(".")):
        return None
    return name[1:name.index(atomic.TMP_MARKER)]


def _summary_is_ours(summary_file: Path) -> bool:
    """Whether an existing run summary was written by infer.py (its `args` is a dict naming the backend;
    ais_bench stores its argv list), so a new run may replace it."""
    from repvgg_pipeline.formats.summary import read_summary  # the summary format's one reader

    if not stat.S_ISREG(os.lstat(summary_file).st_mode):
        return False
    try:
        args = read_summary(summary_file).get("args")
    except UserError:
        return False
    return isinstance(args, dict) and "backend" in args


def claim_dump_folder(folder: Path, planned: Sequence[str], resume: bool, summary_file: Path | None = None) -> int:
    """Make `folder` ready for this run's dumps (`planned` file names) and record them in its manifest.

    Removes the dumps an earlier infer.py run wrote there (on `resume`, only those not among
    `planned`, which the runner keeps when complete), the leftovers of its interrupted writes
    and its `summary_file` (a stale summary would describe the old dumps until the new run
    ends, or forever if it fails). Raises `UserError`, before removing anything, when a
    dump-named entry there is not one infer.py recorded, or the summary is not infer.py's.
    Returns how many files were removed.
    """
    stale_summary = summary_file is not None and os.path.lexists(summary_file)
    if stale_summary and not _summary_is_ours(summary_file):
        raise fail(f"{summary_file} was not written by infer.py; move it away or choose another --output_dirname")
    ours = _read_manifest(folder)
    keep = set(planned) if resume else set()
    foreign: list[str] = []
    remove: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                regular = entry.is_file(follow_symlinks=False)
                if parse_dump_name(name) is not None:
                    if name not in ours or not regular:
                        foreign.append(name)
                    elif name not in keep:
                        remove.append(name)
                elif (target := _temporary_target(name)) is not None and target in ours and regular:
                    remove.append(name)
    except OSError as err:
        raise fail(f"cannot list output folder {folder}: {err.strerror or err}") from None
    if foreign:
        foreign.sort()
        raise fail(f"{folder} holds {len(foreign)} dump file(s) infer.py did not write (first: {foreign[0]}); "
                   f"it deletes only its own dumps: move them away or choose another --output_dirname")
    for name in remove:
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise fail(f"cannot remove the earlier dump {folder / name}: {err.strerror or err}") from None
    if stale_summary:
        try:
            os.unlink(summary_file)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise fail(f"cannot remove the earlier summary {summary_file}: {err.strerror or err}") from None
    manifest = folder / MANIFEST_NAME
    try:
        atomic.write_text(manifest, json.dumps({"written_by": _MANIFEST_TOOL, "dumps": sorted(set(planned))}) + "\n")
    except OSError as err:
        raise cannot_write(manifest, err) from None
    return len(remove)


def fit_batch_to_inputs(batch_size: int, inputs: int, fixed_by_model: bool) -> tuple[int, str | None]:
    """A dynamic-batch model runs `inputs` rows when fewer than `batch_size`: padding to the requested
    size would compute (and count in the throughput) rows that are only zeros. Returns the batch
    and a note for the user, or None when nothing changed."""
    if fixed_by_model or inputs < 1 or batch_size <= inputs:
        return batch_size, None
    return inputs, f"--batch-size {batch_size} is more than the {inputs} inputs: running one batch of {inputs}"


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit; None if unknown."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    try:  # a container's limit; its page cache (memory.current counts it) can be reclaimed, so only anon counts
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        stats = dict(line.split() for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines()
                     if line.count(" ") == 1)
        if limit.isdigit() and stats.get("anon", "").isdigit():
            found.append(max(int(limit) - int(stats["anon"]), 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_batch_memory(batch_size: int, sample_nbytes: int, available: int | None = None) -> None:
    """Raise `UserError` when a batch's buffers alone need more memory than is available."""
    available = available_memory() if available is None else available
    needed = BATCH_COPIES * batch_size * sample_nbytes
    if available is not None and needed > available:
        raise fail(f"batch size {batch_size} needs at least {_gib(needed)} of memory ({BATCH_COPIES} copies of "
                   f"{batch_size} x {sample_nbytes} bytes), {_gib(available)} available: give a smaller --batch-size")
