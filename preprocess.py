"""ImageNet images -> one `.bin` input tensor per image, exactly as torchvision's eval transform.

    python preprocess.py /data/imagenet/val ./prep_dataset
    python preprocess.py repvgg /data/imagenet/val ./prep_dataset      # ModelZoo form, same thing
    python preprocess.py val ./prep_320 --crop 320                      # D2se / RepVGGplus (Resize 320)
    python preprocess.py val ./prep_u8 --dtype uint8                    # for an OM with AIPP
    python preprocess.py val ./prep_ms --preset mindspore               # MindSpore model zoo eval / ONNX figures
    python preprocess.py val ./prep_ms310 --preset mindspore-310        # MindSpore model zoo Ascend 310 figures

Writes `<image stem>.bin` (float32 CHW, or uint8 HWC with --dtype uint8) into DST, plus
`val_label.txt` when SRC has one subfolder per class. Outputs are written atomically, so a rerun
after Ctrl-C skips what is complete and redoes the rest. Unreadable images are reported on
stderr and in DST/failed.txt, everything else is still written, and the exit code is 1.
DST must not hold tensors of images that are not in SRC (infer.py would score them too): such
a run is refused before any work, unless --remove-stale deletes them (only tensors this tool
wrote) or --keep-stale keeps them on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from repvgg_pipeline.cli import EXIT_FAILED, UserError, fail, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these (slow) imports into one line
from tqdm import tqdm

from repvgg_pipeline import atomic
from repvgg_pipeline.dataset import CLASS_FOLDERS, ImageItem, check_unique_keys, find_images, parse_shard, shard
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.failures import printable, write_failures
from repvgg_pipeline.formats.labels import write_labels
from repvgg_pipeline.memory import shortfall
from repvgg_pipeline.preprocessing import (
    LABEL_FILE,
    add_transform_arguments,
    check_workers,
    init_worker,
    preprocess_one,
    transform_from_options,
)
from repvgg_pipeline.transforms import TORCHVISION, EvalTransform

MODEL_PRESETS = {"repvgg": {}}  # the ModelZoo script's model_type argument; its only model uses the defaults
SETTINGS_FILE = ".preprocess-settings.json"  # hidden: ais_bench and gen_dataset_info only read *.bin
WORKER_BASE_BYTES = 96 * 1024 ** 2  # one worker process (Python, numpy, Pillow) before its first image
MAX_LISTED = 5


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess.py",
        usage="%(prog)s [repvgg] SRC DST [--preset NAME] [--resize N] [--crop N] [--mean R G B] [--std R G B] "
              "[--dtype {float32,uint8}] [--workers N] [--shard i/n] [--overwrite] [--remove-stale | --keep-stale]",
        description="Preprocess images into .bin input tensors (Resize, CenterCrop, ToTensor, Normalize, "
                    "bit-identical to torchvision).")
    parser.add_argument("paths", nargs="+", metavar="[repvgg] SRC DST",
                        help="source folder (flat ImageNet val or one subfolder per class) and output folder; "
                             "an optional leading model name 'repvgg' is accepted like the ModelZoo script")
    add_transform_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo every output, even complete ones")
    stale = parser.add_mutually_exclusive_group()
    stale.add_argument("--remove-stale", action="store_true",
                       help="delete the .bin tensors in DST of images that are not in SRC (only tensors "
                            "preprocess.py wrote there; default: refuse to run while there are any)")
    stale.add_argument("--keep-stale", action="store_true",
                       help="keep tensors in DST of images not in SRC (they will be inferred and scored too)")
    return parser


def _split_paths(paths: list[str]) -> tuple[Path, Path]:
    if len(paths) == 3 and paths[0] in MODEL_PRESETS:
        paths = paths[1:]
    if len(paths) != 2:
        raise fail(f"expected SRC DST (or repvgg SRC DST), got {len(paths)} paths: {' '.join(paths)}")
    return Path(paths[0]), Path(paths[1])


def _transform_from_args(args: argparse.Namespace) -> EvalTransform:
    return transform_from_options(args.crop, args.resize, args.mean, args.std, args.preset)


def _check_memory(transform: EvalTransform, workers: int) -> None:
    """Refuse sizes (or worker counts) that cannot fit in memory, before any image is read.

    Per worker: the resized image (at least resize x resize RGB, held twice while Pillow
    resizes), the crop and its float32 tensor, plus the process itself.
    """
    per_image = 2 * 3 * transform.resize ** 2 + 3 * transform.crop ** 2 * (1 + 4)
    needed = workers * (WORKER_BASE_BYTES + per_image)
    problem = shortfall(needed)
    if problem:
        per = f"--resize {transform.resize} / --crop {transform.crop} with {workers} worker{'s' if workers > 1 else ''}"
        raise fail(f"{per} {problem} (at least {per_image / 1024 ** 2:.0f} MiB per image); "
                   "use smaller sizes or fewer --workers")


def _write_or_fail(write: Callable[[Path, Any], None], path: Path, content: Any) -> None:
    """`write(path, content)`, an OSError (a folder in the way, a full disk) as one line."""
    try:
        write(path, content)
    except OSError as err:
        raise fail(f"cannot write {path}: {err.strerror or err}") from None


def _prepare_destination(dst: Path) -> None:
    """Create DST and prove it is writable before any work starts (one-line error otherwise)."""
    if dst.exists() and not dst.is_dir():
        raise fail(f"destination {dst} exists and is not a folder")
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(dst / ".write-test") as probe:
            probe.write_bytes(b"")
        (dst / ".write-test").unlink()
    except OSError as err:
        raise fail(f"cannot write to destination {dst}: {err.strerror or err}") from None


def _previous_settings(dst: Path) -> dict | None:
    """The settings marker an earlier run left in DST (None when there is none: no tensor there is ours)."""
    path = dst / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _check_settings(dst: Path, settings: dict, previous: dict | None, overwrite: bool) -> None:
    """Refuse to resume into a folder made with other settings (sizes alone would not tell)."""
    if previous and not overwrite and previous != settings:
        changed = ", ".join(f"{k} {previous.get(k)} -> {settings.get(k)}" for k in sorted({*previous, *settings})
                            if previous.get(k) != settings.get(k))
        raise fail(f"{dst} holds tensors made with other settings ({changed}); "
                   "pass --overwrite or choose another folder")


def _marked_sizes(settings: dict | None) -> set[int]:
    """The tensor size a settings marker stands for (empty when the marker is unreadable)."""
    try:
        return {tensors.tensor_nbytes(settings["dtype"], int(settings["crop"]), int(settings["crop"]))}
    except (KeyError, TypeError, ValueError, UserError):
        return set()


def _stale_tensors(dst: Path, expected: set[str]) -> list[str]:
    """Names of the .bin tensors in DST that belong to no image of SRC."""
    try:
        names = tensors.list_tensor_files(dst)
    except UserError:  # no .bin at all
        return []
    return [name for name in names if name not in expected]


def _handle_stale(dst: Path, stale: list[str], args: argparse.Namespace, previous: dict | None,
                  sizes: set[int]) -> str:
    """Refuse, remove or keep the tensors of images not in SRC; returns the note for the summary.

    Default is to refuse, before any work: a warning at the end of a long run is easily missed,
    and infer.py + postprocess.py would then score those tensors as if they were part of SRC.
    Only tensors this tool wrote are removed: regular files of a tensor size our settings marker
    stands for, in a folder that has the marker.
    """
    if not stale:
        return ""
    shown = ", ".join(printable(n) for n in stale[:MAX_LISTED]) + (f" (+{len(stale) - MAX_LISTED} more)"
                                                                    if len(stale) > MAX_LISTED else "")
    if args.keep_stale:
        return f", {len(stale)} tensors of images not in SRC kept in DST (--keep-stale)"
    if not args.remove_stale:
        raise fail(f"{dst} holds {len(stale)} .bin tensors of images that are not in SRC ({shown}); infer.py "
                   "would score them too: pass --remove-stale to delete them, --keep-stale to keep them, "
                   "or choose another folder")
    ours = []
    for name in stale:
        info = (dst / name).lstat()
        if previous is not None and stat.S_ISREG(info.st_mode) and info.st_size in sizes:
            ours.append(name)
    foreign = [n for n in stale if n not in ours]
    if foreign:
        why = "DST has no settings marker of preprocess.py" if previous is None else "not tensors of its settings"
        raise fail(f"--remove-stale: {len(foreign)} of the {len(stale)} .bin files not from SRC were not written by "
                   f"preprocess.py ({why}): {', '.join(printable(n) for n in foreign[:MAX_LISTED])}; "
                   "remove them yourself or choose another folder")
    for name in ours:
        (dst / name).unlink(missing_ok=True)
    return f", {len(ours)} tensors of images not in SRC removed (--remove-stale)"


def output_path(dst: Path, item: ImageItem) -> Path:
    """`<image stem>.bin` in DST, flat for both layouts."""
    return dst / (Path(item.name).stem + ".bin")


def _complete_outputs(dst: Path, nbytes: int, planned: set[str]) -> set[str]:
    """Names of planned outputs already complete (right size); removes leftovers of interrupted writes."""
    complete = set()
    with os.scandir(dst) as entries:
        for entry in entries:
            name = entry.name
            if atomic.is_temporary(name):
                final = name[1:name.index(atomic.TMP_MARKER)] if name.startswith(".") else ""
                if final in planned:  # only our own shard's leftovers: another shard may be writing its own
                    Path(entry.path).unlink(missing_ok=True)
            elif name in planned and entry.is_file() and entry.stat().st_size == nbytes:
                complete.add(name)
    return complete


def _process_one(job: tuple[str, str]) -> tuple[str, str | None, str | None]:
    """Preprocess one image; returns (source, image error, write error) with None for no error."""
    source, target = job
    array, image_error = preprocess_one(source)
    if image_error is not None:
        return source, image_error, None
    try:
        tensors.write_tensor(target, array)
    except OSError as err:
        return source, None, f"cannot write {target}: {err.strerror or err}"
    return source, None, None


def _run_jobs(jobs: list[tuple[str, str]], transform: EvalTransform, dtype: str, workers: int) -> Iterable:
    """Yield `_process_one` results, in-process for one worker, else from a process pool."""
    if workers <= 1 or len(jobs) <= 1:
        init_worker(transform, dtype, ignore_sigint=False)
        for job in jobs:
            yield _process_one(job)
        return
    chunksize = max(1, min(8, len(jobs) // (workers * 32)))  # small chunks: no worker idles at the end
    with Pool(workers, initializer=init_worker, initargs=(transform, dtype, True)) as pool:
        yield from pool.imap_unordered(_process_one, jobs, chunksize=chunksize)


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    src, dst = _split_paths(args.paths)
    transform = _transform_from_args(args)
    check_workers(args.workers)
    shard_index, shard_count = parse_shard(args.shard) if args.shard else (0, 1)

    found = find_images(src, exclude=dst)
    check_unique_keys(found.items)
    _check_memory(transform, min(args.workers, max(1, len(found.items))))
    _prepare_destination(dst)
    settings = {**asdict(transform), "dtype": args.dtype}
    settings["mean"], settings["std"] = list(transform.mean), list(transform.std)
    if transform.preset == TORCHVISION:  # folders written before presets existed hold no "preset" key
        del settings["preset"]
    previous = _previous_settings(dst)
    _check_settings(dst, settings, previous, args.overwrite)
    nbytes = tensors.tensor_nbytes(args.dtype, transform.crop, transform.crop)
    stale = _stale_tensors(dst, {output_path(dst, item).name for item in found.items})
    stale_note = _handle_stale(dst, stale, args, previous, {nbytes} | _marked_sizes(previous))
    _write_or_fail(atomic.write_text, dst / SETTINGS_FILE, json.dumps(settings, sort_keys=True) + "\n")
    if found.layout == CLASS_FOLDERS:
        _write_or_fail(write_labels, dst / LABEL_FILE, [(item.name, item.label) for item in found.items])
    for note in found.notes:
        print(f"preprocess.py: warning: {note}", file=sys.stderr)

    items = shard(found.items, shard_index, shard_count)
    targets = {item: output_path(dst, item) for item in items}
    done = _complete_outputs(dst, nbytes, {t.name for t in targets.values()})
    # with --overwrite, a redo that fails must not leave the tensor of the image's earlier version behind
    replaced = done if args.overwrite and previous is not None else set()
    if args.overwrite:
        done = set()
    jobs = [(str(item.path), str(target)) for item, target in targets.items() if target.name not in done]
    relative = {str(item.path): item.relative for item in items}
    target_of = dict(jobs)

    failures = [(item.relative, reason) for item, reason in shard(found.unusable, shard_index, shard_count)]
    for name, reason in failures:
        print(f"preprocess.py: cannot use image {printable(name)}: {reason}", file=sys.stderr)
    written = 0
    workers = min(args.workers, max(1, len(jobs)))
    with tqdm(total=len(jobs), unit="img", desc="preprocess", file=sys.stderr, disable=None) as bar:
        for source, image_error, write_error in _run_jobs(jobs, transform, args.dtype, workers):
            if write_error:
                raise fail(write_error)
            if image_error:
                failures.append((relative[source], image_error))
                if Path(target_of[source]).name in replaced:  # ours, complete, of the image's earlier content
                    Path(target_of[source]).unlink(missing_ok=True)
                tqdm.write(f"preprocess.py: cannot read image {printable(relative[source])}: {printable(image_error)}",
                           file=sys.stderr)
            else:
                written += 1
            bar.update()

    failures.sort(key=lambda f: f[0])
    failed_name = "failed.txt" if shard_count == 1 else f"failed.{shard_index}-of-{shard_count}.txt"
    _write_or_fail(write_failures, dst / failed_name, failures)
    elapsed = time.perf_counter() - started
    processed = written + len(failures)
    shape = tensors.describe(args.dtype, transform.crop, transform.crop)
    part = f" (shard {shard_index}/{shard_count})" if shard_count > 1 else ""
    ignored = f", {len(found.ignored)} non-image files ignored" if found.ignored else ""
    ignored += f", {len(found.notes)} entries skipped (see warnings)" if found.notes else ""
    ignored += stale_note
    rate = processed / elapsed if elapsed > 0 else 0.0
    print(f"preprocess: {len(items)} images{part} ({found.layout}) -> {dst} ({shape}): {written} written, "
          f"{len(done)} skipped (already done), {len(failures)} failed{ignored}; "
          f"{rate:.1f} images/s, {elapsed:.1f} s, {workers} worker{'s' if workers != 1 else ''}")
    if failures:
        print(f"preprocess.py: {len(failures)} images could not be read, listed in {dst / failed_name}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
