"""Streaming: images decoded in worker processes and handed to the backend as batches, no tensor file written.

`infer.py MODEL IMAGES OUTPUT` with a folder of images (flat, or one subfolder per
class, as preprocess.py reads it) runs preprocess.py's own per-image code
(`repvgg_pipeline.preprocessing`) in a process pool and feeds the arrays straight to
the backend, so the dumps are byte for byte those of preprocess.py + infer.py:

- same images, same order: the order infer.py gives the `.bin` files preprocess.py
  would write (natural sort of `<stem>.bin`), so every batch holds the same images;
- an unreadable image is reported (stderr, `failed.txt`) and left out, as preprocess.py
  leaves out its tensor, so the following batches are composed as in the two-step run.

Memory is bounded by the queue depth, whatever the number of images: at most `depth`
batches of images are submitted to the pool ahead of the batch being assembled, and
two batch buffers are reused. How much runs ahead depends on where the compute runs
(`Backend.compute_on_host`): off the host (an NPU), `depth` batches are decoded while the
device computes; on the host CPU the workers decode the next batch between computes,
with every core, instead of taking cores from the compute (on 2 cores an ONNX Runtime
thread that loses its core stalls every other one at the next barrier).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from repvgg_pipeline.cli import fail, usable_cores
from repvgg_pipeline.dataset import (
    CLASS_FOLDERS,
    check_unique_keys,
    find_images,
    is_image_name,
    natural_key,
    parse_shard,
    shard,
)
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.labels import write_labels
from repvgg_pipeline.preprocessing import (
    LABEL_FILE,
    check_workers,
    init_worker,
    preprocess_one,
    transform_from_options,
    write_failures,
)
from repvgg_pipeline.runner import Geometry
from repvgg_pipeline.sources import Batch


@dataclass(frozen=True)
class StreamOptions:
    """preprocess.py's options; None means 'what the model takes' (crop = its input size, dtype = its layout)."""

    crop: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    dtype: str | None = None
    workers: int = field(default_factory=usable_cores)
    shard: str | None = None
    depth: int = 2  # batches decoded ahead of the one being assembled, when the compute runs off the host


@dataclass(frozen=True)
class ImageSample:
    """One source image: `stem` names its dumps (as preprocess.py names its tensor), `relative` its messages."""

    stem: str
    infile: str
    relative: str


def looks_like_images(folder: Path | str) -> bool:
    """True for a folder holding images (at the top, or in subfolders) and no `.bin` tensors at the top.

    That is what `infer.py` streams without being told (`--stream`); a folder of tensors, or one
    holding neither, takes the tensor path and its messages.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    try:
        with os.scandir(folder) as entries:
            top = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    except OSError:
        return False
    if any(name.lower().endswith(".bin") and not is_dir for name, is_dir in top):
        return False
    if any(not is_dir and is_image_name(name) for name, is_dir in top):
        return True
    for name, is_dir in top:
        if is_dir:
            for _, _, files in os.walk(folder / name, followlinks=True):
                if any(is_image_name(f) for f in files):
                    return True
    return False


class ImageStream:
    """A folder of images as a `BatchSource`: preprocess.py's transform in worker processes, no files written."""

    def __init__(self, folder: Path | str, options: StreamOptions | None = None,
                 exclude: Path | str | None = None) -> None:
        self.options = options or StreamOptions()
        check_workers(self.options.workers)
        self.shard_index, self.shard_count = parse_shard(self.options.shard) if self.options.shard else (0, 1)
        self.found = find_images(folder, exclude=exclude)
        check_unique_keys(self.found.items)
        items = shard(self.found.items, self.shard_index, self.shard_count)
        # the order infer.py gives the tensors preprocess.py writes (`<stem>.bin`), so batches hold the same images
        items.sort(key=lambda item: natural_key(Path(item.name).stem + ".bin"))
        self.samples: list[ImageSample] = [ImageSample(Path(i.name).stem, str(i.path), i.relative) for i in items]
        self.failures: list[tuple[str, str]] = []
        self.transform = None
        self.dtype: str | None = None

    def size_hint(self) -> tuple[int, int] | None:
        crop = self.options.crop
        return (crop, crop) if crop else None

    def check(self, geometry: Geometry) -> None:
        """Settle the transform against the model's input: square size = crop, layout = dtype, 3 channels."""
        options = self.options
        if geometry.channels != 3:
            raise fail(f"the model takes {geometry.channels}-channel input ({geometry.describe()}); "
                       "images decode to 3 channels (RGB)")
        if geometry.height != geometry.width:
            raise fail(f"the model's input is {geometry.height}x{geometry.width}; the center crop is square: "
                       "run preprocess.py with a matching transform, or export a square model")
        if options.crop is not None and options.crop != geometry.height:
            raise fail(f"--crop {options.crop} makes {options.crop}x{options.crop} images, the model takes "
                       f"{geometry.describe()}: leave --crop out to use the model's size")
        if options.dtype is not None and options.dtype != geometry.layout:
            hint = (" (an OM with AIPP normalises on the device): pass --dtype uint8 or leave --dtype out"
                    if geometry.layout == tensors.UINT8_HWC else ": pass --dtype float32 or leave --dtype out")
            raise fail(f"--dtype {options.dtype} does not fit the model, which takes {geometry.describe()}{hint}")
        self.transform = transform_from_options(geometry.height, options.resize, options.mean, options.std)
        self.dtype = geometry.layout

    def batches(self, todo: Sequence[tuple[int, ImageSample]], batch_size: int, geometry: Geometry,
                overlap: bool) -> Iterator[Batch]:
        if self.transform is None:
            raise RuntimeError("check(geometry) must run before batches()")
        if not todo:
            return
        shape, dtype = (batch_size, *geometry.shape), tensors.layout_dtype(geometry.layout)
        buffers = itertools.cycle([np.empty(shape, dtype=dtype), np.empty(shape, dtype=dtype)])
        ahead = batch_size * max(1, self.options.depth) if overlap else batch_size
        workers = max(1, min(self.options.workers, len(todo)))
        pool = Pool(workers, initializer=init_worker, initargs=(self.transform, self.dtype, True))
        try:
            queue = iter(todo)
            pending: deque = deque()

            def submit_up_to(limit: int) -> None:
                while len(pending) < limit:
                    entry = next(queue, None)
                    if entry is None:
                        return
                    pending.append((entry, pool.apply_async(preprocess_one, (entry[1].infile,))))

            rows: list[tuple[int, ImageSample]] = []
            array, consumed = next(buffers), 0
            submit_up_to(ahead)
            while pending:
                (index, sample), result = pending.popleft()
                if overlap:
                    submit_up_to(ahead)
                pixels, error = result.get()
                consumed += 1
                if error is not None:
                    self._report_failure(sample, error)
                else:
                    array[len(rows)] = pixels
                    rows.append((index, sample))
                if not overlap:  # on the host: only what this batch still needs, so no worker decodes during compute
                    submit_up_to(batch_size - len(rows))
                if len(rows) == batch_size or (not pending and rows):
                    array[len(rows):] = 0
                    yield Batch(rows, array, consumed)
                    rows, array, consumed = [], next(buffers), 0
                    if not overlap:
                        submit_up_to(batch_size)
        finally:
            pool.terminate()  # also on Ctrl-C or an error: no worker outlives the run
            pool.join()

    def _report_failure(self, sample: ImageSample, error: str) -> None:
        from tqdm import tqdm

        self.failures.append((sample.relative, error))
        tqdm.write(f"infer: cannot read image {sample.relative}: {error}", file=sys.stderr)

    def failures_name(self) -> str:
        """`failed.txt`, or `failed.i-of-n.txt` for a shard, as preprocess.py names it."""
        return "failed.txt" if self.shard_count == 1 else f"failed.{self.shard_index}-of-{self.shard_count}.txt"

    def write_reports(self, output_root: Path) -> Path | None:
        """`val_label.txt` for class folders; the failure list (removed when none failed, as preprocess.py does)."""
        if self.found.layout == CLASS_FOLDERS:
            write_labels(output_root / LABEL_FILE, [(item.name, item.label) for item in self.found.items])
        path = output_root / self.failures_name()
        write_failures(path, sorted(self.failures))
        return path if self.failures else None
