"""ImageNet images -> one `.bin` input tensor per image, exactly as torchvision's eval transform.

    python preprocess.py /data/imagenet/val ./prep_dataset
    python preprocess.py repvgg /data/imagenet/val ./prep_dataset      # ModelZoo form, same thing
    python preprocess.py val ./prep_320 --crop 320                      # D2se / RepVGGplus (Resize 320)
    python preprocess.py val ./prep_u8 --dtype uint8                    # for an OM with AIPP

Writes `<image stem>.bin` (float32 CHW, or uint8 HWC with --dtype uint8) into DST, plus
`val_label.txt` when SRC has one subfolder per class. Outputs are written atomically, so a rerun
after Ctrl-C skips what is complete and redoes the rest. Unreadable images are reported on
stderr and in DST/failed.txt, everything else is still written, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from repvgg_pipeline import atomic
from repvgg_pipeline.cli import EXIT_FAILED, fail, run_cli
from repvgg_pipeline.dataset import CLASS_FOLDERS, ImageItem, check_unique_keys, find_images, parse_shard, shard
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.labels import write_labels
from repvgg_pipeline.preprocessing import (
    LABEL_FILE,
    add_transform_arguments,
    check_workers,
    init_worker,
    preprocess_one,
    transform_from_options,
    write_failures,
)
from repvgg_pipeline.transforms import EvalTransform

MODEL_PRESETS = {"repvgg": {}}  # the ModelZoo script's model_type argument; its only model uses the defaults
SETTINGS_FILE = ".preprocess-settings.json"  # hidden: ais_bench and gen_dataset_info only read *.bin


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess.py",
        usage="%(prog)s [repvgg] SRC DST [--resize N] [--crop N] [--mean R G B] [--std R G B] "
              "[--dtype {float32,uint8}] [--workers N] [--shard i/n] [--overwrite]",
        description="Preprocess images into .bin input tensors (Resize, CenterCrop, ToTensor, Normalize, "
                    "bit-identical to torchvision).")
    parser.add_argument("paths", nargs="+", metavar="[repvgg] SRC DST",
                        help="source folder (flat ImageNet val or one subfolder per class) and output folder; "
                             "an optional leading model name 'repvgg' is accepted like the ModelZoo script")
    add_transform_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo every output, even complete ones")
    return parser


def _split_paths(paths: list[str]) -> tuple[Path, Path]:
    if len(paths) == 3 and paths[0] in MODEL_PRESETS:
        paths = paths[1:]
    if len(paths) != 2:
        raise fail(f"expected SRC DST (or repvgg SRC DST), got {len(paths)} paths: {' '.join(paths)}")
    return Path(paths[0]), Path(paths[1])


def _transform_from_args(args: argparse.Namespace) -> EvalTransform:
    return transform_from_options(args.crop, args.resize, args.mean, args.std)


def _prepare_destination(dst: Path) -> None:
    """Create DST and prove it is writable before any work starts (one-line error otherwise)."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(dst / ".write-test") as probe:
            probe.write_bytes(b"")
        (dst / ".write-test").unlink()
    except OSError as err:
        raise fail(f"cannot write to destination {dst}: {err.strerror or err}") from None


def _check_settings(dst: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to resume into a folder made with other settings (sizes alone would not tell)."""
    path = dst / SETTINGS_FILE
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous is not None and previous != settings:
            changed = ", ".join(f"{k} {previous.get(k)} -> {v}" for k, v in settings.items() if previous.get(k) != v)
            raise fail(f"{dst} holds tensors made with other settings ({changed}); "
                       "pass --overwrite or choose another folder")
    atomic.write_text(path, json.dumps(settings, sort_keys=True) + "\n")


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
    _prepare_destination(dst)
    settings = {**asdict(transform), "dtype": args.dtype}
    settings["mean"], settings["std"] = list(transform.mean), list(transform.std)
    _check_settings(dst, settings, args.overwrite)
    if found.layout == CLASS_FOLDERS:
        write_labels(dst / LABEL_FILE, [(item.name, item.label) for item in found.items])

    items = shard(found.items, shard_index, shard_count)
    nbytes = tensors.tensor_nbytes(args.dtype, transform.crop, transform.crop)
    targets = {item: output_path(dst, item) for item in items}
    done = _complete_outputs(dst, nbytes, {t.name for t in targets.values()})
    if args.overwrite:
        done = set()
    jobs = [(str(item.path), str(target)) for item, target in targets.items() if target.name not in done]
    relative = {str(item.path): item.relative for item in items}

    failures: list[tuple[str, str]] = []
    written = 0
    workers = min(args.workers, max(1, len(jobs)))
    with tqdm(total=len(jobs), unit="img", desc="preprocess", file=sys.stderr, disable=None) as bar:
        for source, image_error, write_error in _run_jobs(jobs, transform, args.dtype, workers):
            if write_error:
                raise fail(write_error)
            if image_error:
                failures.append((relative[source], image_error))
                tqdm.write(f"preprocess.py: cannot read image {relative[source]}: {image_error}", file=sys.stderr)
            else:
                written += 1
            bar.update()

    failures.sort(key=lambda f: f[0])
    failed_name = "failed.txt" if shard_count == 1 else f"failed.{shard_index}-of-{shard_count}.txt"
    write_failures(dst / failed_name, failures)
    elapsed = time.perf_counter() - started
    processed = written + len(failures)
    shape = tensors.describe(args.dtype, transform.crop, transform.crop)
    part = f" (shard {shard_index}/{shard_count})" if shard_count > 1 else ""
    ignored = f", {len(found.ignored)} non-image files ignored" if found.ignored else ""
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
