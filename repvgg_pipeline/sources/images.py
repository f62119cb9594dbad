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
batches of images are decoded ahead of the batch being computed (one shared memory slot
each), and two batch buffers are reused. The workers decode ahead whether the compute runs
off the host (an NPU: wall time ~ max(decode, compute)) or on its CPU: on 2 cores with ONNX
Runtime, decoding during compute was measured faster than decoding between computes with
every core (bench_stream.py, 1,000 images, a shared and noisy machine: 0.91 x vs 1.41 x the
two-step time; smaller runs 0.99 x vs 1.07 x), so `depth=0`, nothing decoded during compute,
is only an option.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
from repvgg_pipeline.formats.failures import printable
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
    preset: str = "torchvision"  # transforms.PRESETS: whose evaluation transform
    depth: int = 2  # batches decoded ahead of the one being computed; 0: decode only between computes


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
        # as preprocess.py: special files and symlink loops skipped with a warning, images whose names no
        # text file can hold are failures (failed.txt, exit 1); never dropped without a word
        for note in self.found.notes:
            print(f"infer.py: warning: {note}", file=sys.stderr)
        self.failures: list[tuple[str, str]] = [
            (item.relative, reason) for item, reason in shard(self.found.unusable, self.shard_index, self.shard_count)]
        for name, reason in self.failures:
            print(f"infer: cannot use image {printable(name)}: {reason}", file=sys.stderr)
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
            raise fail(f"the model's input is {geometry.height}x{geometry.width}; the eval transform makes square "
                       "center crops, so stream into a model with a square input")
        if options.crop is not None and options.crop != geometry.height:
            raise fail(f"--crop {options.crop} makes {options.crop}x{options.crop} images, the model takes "
                       f"{geometry.describe()}: leave --crop out to use the model's size")
        if options.dtype is not None and options.dtype != geometry.layout:
            hint = (" (an OM with AIPP normalises on the device): pass --dtype uint8 or leave --dtype out"
                    if geometry.layout == tensors.UINT8_HWC else ": pass --dtype float32 or leave --dtype out")
            raise fail(f"--dtype {options.dtype} does not fit the model, which takes {geometry.describe()}{hint}")
        self.transform = transform_from_options(geometry.height, options.resize, options.mean, options.std,
                                                options.preset)
        self.dtype = geometry.layout

    def batches(self, todo: Sequence[tuple[int, ImageSample]], batch_size: int, geometry: Geometry,
                overlap: bool) -> Iterator[Batch]:
        if self.transform is None:
            raise RuntimeError("check(geometry) must run before batches()")
        if not todo:
            return
        shape, dtype = geometry.shape, tensors.layout_dtype(geometry.layout)
        buffers = itertools.cycle([np.empty((batch_size, *shape), dtype), np.empty((batch_size, *shape), dtype)])
        del overlap  # decoding ahead pays on the host CPU too (module doc); `depth` says how far
        lockstep = self.options.depth < 1
        ahead = batch_size * max(1, self.options.depth)
        workers = max(1, min(self.options.workers, len(todo)))
        with DecodePool(workers, self.transform, self.dtype, ahead, shape, dtype) as pool:
            queue = iter(todo)
            submitted: deque[tuple[int, ImageSample]] = deque()  # in order, not yet consumed

            def submit_up_to(limit: int) -> None:
                while len(submitted) < limit:
                    entry = next(queue, None)
                    if entry is None:
                        return
                    pool.submit(entry[1].infile)
                    submitted.append(entry)

            rows: list[tuple[int, ImageSample]] = []
            array, consumed = next(buffers), 0
            submit_up_to(ahead)
            while submitted:
                index, sample = submitted.popleft()
                error = pool.next_into(array[len(rows)])
                if not lockstep:
                    submit_up_to(ahead)
                consumed += 1
                if error is not None:
                    self._report_failure(sample, error)
                else:
                    rows.append((index, sample))
                if lockstep:  # only what this batch still needs, so no worker decodes during compute
                    submit_up_to(batch_size - len(rows))
                if len(rows) == batch_size or (not submitted and rows):
                    array[len(rows):] = 0
                    yield Batch(rows, array, consumed)
                    rows, array, consumed = [], next(buffers), 0
                    if lockstep:
                        submit_up_to(batch_size)

    def _report_failure(self, sample: ImageSample, error: str) -> None:
        from tqdm import tqdm

        self.failures.append((sample.relative, error))
        tqdm.write(f"infer: cannot read image {printable(sample.relative)}: {printable(error)}", file=sys.stderr)

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


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back meanwhile (not lost: it is delivered when unblocked); forked children inherit the block."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _set_parent_death_signal() -> None:
    """Linux: have the kernel end this worker when its parent dies, even by SIGKILL (no orphan decoding on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _decode_loop(tasks, results, memory: mmap.mmap, slots: int, shape: tuple[int, ...], dtype: np.dtype,
                 transform, layout: str) -> None:
    """A worker: take (slot, path) tasks, decode with preprocess.py's code into the slot, answer (slot, error)."""
    _set_parent_death_signal()
    init_worker(transform, layout, ignore_sigint=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent around fork
    ring = np.frombuffer(memory, dtype=dtype).reshape(slots, *shape)
    while (task := tasks.get()) is not None:
        slot, path = task
        array, error = preprocess_one(path)
        if error is None:
            ring[slot] = array
        results.send((slot, error))


class DecodePool:
    """Worker processes that decode images into the slots of a shared memory ring, in submission order.

    Why not `multiprocessing.Pool`: its results travel pickled through one pipe (602 KB per
    float32 image, copied four times), and its `terminate()` can deadlock on the task queue's
    lock when a worker sits idle, which is the normal state between batches here (Ctrl-C then
    hung). Here a result is a slot number; the pixels are written once, by the worker, into
    memory the parent reads (one copy into the batch). Each worker answers on its own pipe, so
    the parent can also notice a worker that died (a decoder crash) instead of waiting forever;
    closing terminates the workers without touching any lock. The ring is anonymous shared
    memory inherited through fork (no name to leak); each of the `slots` slots holds one image.
    """

    def __init__(self, workers: int, transform, layout: str, slots: int, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            raise fail("streaming needs the 'fork' start method (Linux, macOS); run preprocess.py + infer.py") from None
        self.memory = mmap.mmap(-1, max(1, slots * int(np.prod(shape)) * np.dtype(dtype).itemsize))
        self.ring = np.frombuffer(self.memory, dtype=dtype).reshape(slots, *shape)
        self.free = deque(range(slots))
        self.order: deque[int] = deque()  # slots of the submitted images, in submission order
        self.done: dict[int, str | None] = {}  # slot -> error, for answers that came in ahead of their turn
        self.tasks = context.SimpleQueue()
        self.processes, self.answers = [], []
        with _sigint_blocked():  # a Ctrl-C at fork time must reach the parent only, not a worker not yet ignoring it
            for _ in range(workers):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(target=_decode_loop, daemon=True,
                                          args=(self.tasks, writer, self.memory, slots, shape, dtype, transform,
                                                layout))
                process.start()
                writer.close()  # the worker holds its end; EOF here then means the worker is gone
                self.processes.append(process)
                self.answers.append(reader)

    def submit(self, path: str) -> None:
        """Queue one image; at most `slots` may be submitted and not yet taken with `next_into`."""
        slot = self.free.popleft()
        self.order.append(slot)
        self.tasks.put((slot, path))

    def next_into(self, out: np.ndarray) -> str | None:
        """Wait for the oldest submitted image and copy it into `out`; its error instead when it was unreadable."""
        slot = self.order.popleft()
        while slot not in self.done:
            for reader in multiprocessing.connection.wait(self.answers):
                try:
                    answered, error = reader.recv()
                except EOFError:
                    process = self.processes[self.answers.index(reader)]
                    process.join(1)
                    raise fail(f"an image decoding worker died (exit code {process.exitcode}); "
                               "rerun with --resume to go on", exit_code=1) from None
                self.done[answered] = error
        error = self.done.pop(slot)
        if error is None:
            out[...] = self.ring[slot]
        self.free.append(slot)
        return error

    def close(self) -> None:
        """End the workers (also mid-task: nothing they hold is used again) and release the ring."""
        for process in self.processes:
            if process.exitcode is None:
                process.terminate()
        for process in self.processes:
            process.join()
        for reader in self.answers:
            reader.close()
        self.tasks.close()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
