"""The inference runner behind `infer.py`: batches `.bin` tensors through a backend and writes ais_bench's layout.

Whatever the backend (ONNX Runtime here, ais_bench's InferSession on an NPU), the
output is exactly what `python3 -m ais_bench` writes (ASCEND_FORMATS.md §4), so
postprocess.py and parse_perf.py read one format:

- `{output_root}/{output_dirname}/{stem}_{i}.bin|npy|txt`, one per input and output index i,
  each of shape (1, C);
- `{output_root}/{output_dirname}_summary.json` (for `x/`: `x/_summary.json`, as ais_bench) with
  `filesinfo`, compute/H2D/D2H statistics
  and `throughput = 1000 * batch / mean compute ms`; the same "Performance Summary" lines on stdout.

Inputs are natural-sorted (as ais_bench does), a short last batch is padded with zeros
and the padding's outputs are dropped. Every input file's size is checked against the
model before anything runs, so a wrong file fails the run up front with its name and
the expected size instead of leaving a partial result behind. Reading the next batch and
writing the last batch's dumps overlap the current batch's compute (one background
thread each), which keeps the runner's overhead over a bare `session.run` loop small.

Where the batches come from is a seam (`repvgg_pipeline.sources.BatchSource`): `.bin`
files here (`TensorFiles`), or images decoded on the fly (`sources.images.ImageStream`,
`infer.py` streaming); the backends only ever see arrays.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from repvgg_pipeline import atomic, guards
from repvgg_pipeline.backends import open_backend
from repvgg_pipeline.backends.base import Backend, InputSpec
from repvgg_pipeline.cli import cannot_write, fail
from repvgg_pipeline.formats import dumps, info, summary, tensors
from repvgg_pipeline.sources import Batch, BatchSource, Sample

DEFAULT_BATCH_SIZE = 16


def default_output_dirname() -> str:
    """ais_bench's default folder name: the start time as %Y_%m_%d-%H_%M_%S."""
    return datetime.now().strftime("%Y_%m_%d-%H_%M_%S")


@dataclass(frozen=True)
class InputFile:
    """One input tensor file and the geometry an info file gave for it (None from a folder)."""

    path: Path
    width: int | None = None
    height: int | None = None

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def infile(self) -> str:
        return str(self.path)


def list_inputs(source: Path | str) -> list[InputFile]:
    """The input tensors of a folder (its `*.bin`, natural-sorted) or of an info file (its order).

    Relative paths in an info file are taken from the working folder as the `benchmark`
    tool does, falling back to the info file's own folder.
    """
    source = Path(source)
    if source.is_dir():
        return [InputFile(source / name) for name in tensors.list_tensor_files(source)]
    if not source.is_file():
        what = "is neither a folder nor a regular file" if source.exists() else "not found"
        raise fail(f"input {what}: {source} (expected a folder of .bin files or an .info file)")
    entries = info.read_info(source)
    if not entries:
        raise fail(f"info file lists no inputs: {source}")
    files = []
    for entry in entries:
        path = Path(entry.path)
        if not path.is_absolute() and not path.is_file() and (source.parent / path).is_file():
            path = source.parent / path
        files.append(InputFile(path, entry.width, entry.height))
    return files


@dataclass(frozen=True)
class Geometry:
    """What every input file must be: layout, channels, height, width; and its size in bytes."""

    layout: str
    channels: int
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        return tensors.tensor_nbytes(self.layout, self.height, self.width, self.channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tensors.layout_shape(self.layout, self.height, self.width, self.channels)

    def describe(self) -> str:
        return tensors.describe(self.layout, self.height, self.width, self.channels)


def resolve_geometry(spec: InputSpec, input_size: tuple[int, int] | None,
                     size_hint: tuple[int, int] | None) -> Geometry:
    """The per-image input geometry: from the model, else `--input-size`, else the source's (info file, crop)."""
    height, width = spec.height, spec.width
    if height is not None and width is not None:
        if input_size is not None and tuple(input_size) != (height, width):
            raise fail(f"--input-size {input_size[0]}x{input_size[1]} conflicts with the model's fixed input "
                       f"{height}x{width}")
        return Geometry(spec.layout, spec.channels, height, width)
    if input_size is None:
        input_size = size_hint
    if input_size is None:
        raise fail(f"the model's input {spec.name!r} has no fixed height and width; pass --input-size")
    return Geometry(spec.layout, spec.channels, int(input_size[0]), int(input_size[1]))


def resolve_batch_size(spec: InputSpec, requested: int | None) -> int:
    """A static model's own batch size (a different `--batch-size` is an error), else `requested` or 16."""
    if requested is not None and requested < 1:
        raise fail(f"--batch-size must be at least 1, got {requested}")
    if spec.batch is not None:
        if requested is not None and requested != spec.batch:
            raise fail(f"the model has a fixed batch size of {spec.batch}; --batch-size {requested} conflicts")
        return spec.batch
    return requested or DEFAULT_BATCH_SIZE


def check_input_sizes(files: Sequence[InputFile], geometry: Geometry) -> None:
    """Fail on the first file whose byte size is not the model's input size, naming both sizes.

    A tensor of the other layout (uint8 for a float32 model or the reverse) gets a hint
    on how to produce the right one: uint8 H,W,C files are meant for an OM with AIPP,
    and the ONNX path does not normalise on the host (that would hide a mismatch
    between the preprocessing and the model).
    """
    expected = geometry.nbytes
    for item in files:
        try:
            size = item.path.stat().st_size
        except OSError as err:
            raise fail(f"cannot read input {item.path}: {err.strerror or err}") from None
        if size == expected:
            continue
        found = tensors.detect_layout(size, geometry.height, geometry.width, geometry.channels)
        hint = ""
        if found == tensors.UINT8_HWC:
            hint = ("; it is a uint8 H,W,C tensor for an OM with AIPP: run preprocess.py with --dtype float32 "
                    "for this model")
        elif found == tensors.FLOAT32_CHW:
            hint = "; it is a float32 C,H,W tensor: this model (with AIPP) takes uint8, run preprocess.py --dtype uint8"
        raise fail(f"{item.path}: {size} bytes, expected {expected} ({geometry.describe()}){hint}")


@dataclass
class RunOptions:
    """What `infer.py` passes in; None means 'derive it' (batch from the model, folder name from the clock)."""

    model: Path
    inputs: Path | None
    output_root: Path | None
    output_dirname: str | None = None
    outfmt: str = "BIN"
    batch_size: int | None = None
    backend: str | None = None
    device: int = 0
    warmup: int = 1
    loop: int = 1
    input_size: tuple[int, int] | None = None
    threads: int | None = None
    resume: bool = False
    seed: int = 0
    pure_data_type: str = "random"  # without inputs: "zero" or "random" data (ais_bench --pure_data_type)
    display_all_summary: bool = True  # print the H2D/D2H lines too (ais_bench --display_all_summary)


class TensorFiles:
    """The `.bin` tensors of a folder or an info file (`list_inputs`) as a `BatchSource`: the two-step path."""

    def __init__(self, inputs: Path | str) -> None:
        self.samples: list[InputFile] = list_inputs(inputs)
        self.failures: list[tuple[str, str]] = []  # a tensor that cannot be read fails the run instead

    def size_hint(self) -> tuple[int, int] | None:
        first = self.samples[0] if self.samples else None
        return (first.height, first.width) if first is not None and first.height else None

    def check(self, geometry: Geometry) -> None:
        check_input_sizes(self.samples, geometry)

    def batches(self, todo: Sequence[tuple[int, InputFile]], batch_size: int, geometry: Geometry,
                overlap: bool) -> Iterator[Batch]:
        chunks = list(_chunks(todo, batch_size))
        with _io_executor(overlap) as reader:
            buffers = _batch_buffers(batch_size, geometry)

            def submit(chunk):
                # the buffer handed out here was last run two batches ago: that run has returned
                return reader.submit(_read_batch, [item for _, item in chunk], geometry, next(buffers))

            pending = submit(chunks[0]) if chunks else None
            for number, chunk in enumerate(chunks):
                batch = pending.result()
                if number + 1 < len(chunks):
                    pending = submit(chunks[number + 1])
                yield Batch(list(chunk), batch, len(chunk))

    def write_reports(self, output_root: Path) -> Path | None:
        return None


@dataclass
class RunResult:
    """What a run did, for the caller's report and for tests."""

    summary: dict
    summary_file: Path | None
    dump_dir: Path | None
    samples: int
    batches: int
    padded: int
    skipped: int
    wall_s: float
    batch_size: int
    backend: str
    device: str
    lines: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # inputs that could not be read (streaming)
    failures_file: Path | None = None


def _read_batch(files: Sequence[InputFile], geometry: Geometry, batch: np.ndarray) -> np.ndarray:
    """Read `files` into the rows of `batch` (a reused buffer); rows past the files are zeroed (the padding)."""
    for row, item in enumerate(files):
        tensors.read_tensor(item.path, geometry.layout, geometry.height, geometry.width, geometry.channels,
                            out=batch[row])
    batch[len(files):] = 0
    return batch


def _batch_buffers(batch_size: int, geometry: Geometry) -> itertools.cycle:
    """Two batch buffers used in turn: one is read into while the other is computed on.

    Reusing them, rather than allocating a fresh array per batch, spares the page faults
    and unmaps of a 10 MB allocation per bs16 batch; unmapping memory interrupts every
    core the process runs on, ONNX Runtime's compute threads included (bench_infer.py:
    the run calls themselves got ~5 % slower with a fresh array per batch).
    """
    shape, dtype = (batch_size, *geometry.shape), tensors.layout_dtype(geometry.layout)
    return itertools.cycle([np.empty(shape, dtype=dtype), np.empty(shape, dtype=dtype)])


class _InlineExecutor:
    """The `submit` of a ThreadPoolExecutor, run at once in the calling thread."""

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to the caller through result(), as a thread pool would
            future.set_exception(err)
        return future


def _io_executor(overlap: bool) -> ThreadPoolExecutor | _InlineExecutor:
    """A one-thread pool to overlap file I/O with compute off the host, else inline execution."""
    return ThreadPoolExecutor(max_workers=1) if overlap else _InlineExecutor()


def _chunks(files: Sequence[InputFile], size: int) -> Iterator[Sequence[InputFile]]:
    for start in range(0, len(files), size):
        yield files[start:start + size]


def _write_dumps(chunk: Sequence[tuple[int, Sample]], outputs: Sequence[np.ndarray], dump_dir: Path,
                 outfmt: str) -> dict[str, dict]:
    """Write one batch's dumps (padding rows excluded); return its `filesinfo` entries, keyed by sample index."""
    entries = {}
    for row, (index, item) in enumerate(chunk):
        outfiles = []
        for out_index, output in enumerate(outputs):
            path = dumps.dump_path(dump_dir, item.stem, out_index, outfmt)
            try:
                dumps.write_dump(path, output[row:row + 1])
            except OSError as err:  # disk full, folder made read-only meanwhile
                raise cannot_write(path, err) from None
            outfiles.append(str(path))
        entries[str(index)] = {"infiles": [item.infile], "outfiles": outfiles}
    return entries


def _existing_dumps(dump_dir: Path, stem: str, outputs: int, outfmt: str) -> list[Path] | None:
    """The dumps a resumed run can keep for `stem`: all of its outputs present, else None."""
    paths = [dumps.dump_path(dump_dir, stem, i, outfmt) for i in range(outputs)]
    return paths if all(p.is_file() for p in paths) else None


def _guard_outputs(source: Path | None, files: Sequence[InputFile], dump_dir: Path, summary_file: Path) -> None:
    """Refuse outputs that would land on the inputs: a dump folder that is (or holds) the input folder or a
    folder the info file points into, a summary file that is the info file or one of the inputs."""
    sources = {Path(source)} if source is not None else set()
    sources.update(Path(item.infile).parent for item in files)
    guards.refuse_inputs_inside(dump_dir, sorted(sources), "dump folder")
    inputs = [("input", Path(item.infile)) for item in files if Path(item.infile).name == summary_file.name]
    if source is not None:
        inputs.append(("input", Path(source)))
    guards.refuse_overwriting_inputs(summary_file, inputs)
    if summary_file.is_dir():  # found now, not after the whole run when the summary is written
        raise fail(f"cannot write the summary {summary_file}: it is a folder")


def _makedirs(path: Path, mode: int) -> None:
    """`mkdir -p` giving every folder it creates `mode` (ais_bench's makedirs_safe; os.makedirs sets the last only)."""
    for folder in [*reversed(path.parents), path]:
        if not folder.is_dir():
            folder.mkdir(mode=mode, exist_ok=True)


def _clear_temporaries(dump_dir: Path) -> int:
    """Remove the leftovers of dump writes an interrupt cut short (atomic.py's temporary names, ours alone)."""
    removed = 0
    for entry in os.scandir(dump_dir):
        if entry.is_file(follow_symlinks=False) and atomic.is_temporary(entry.name):
            os.unlink(entry.path)
            removed += 1
    return removed


def _summary_args(options: RunOptions, backend: Backend, batch_size: int) -> dict:
    """The `args` block of the summary, with ais_bench's option names plus which backend ran."""
    return {
        "model": str(options.model),
        "input": None if options.inputs is None else str(options.inputs),
        "output": None if options.output_root is None else str(options.output_root),
        "output_dirname": options.output_dirname,
        "outfmt": options.outfmt,
        "batchsize": batch_size,
        "device": options.device,
        "loop": options.loop,
        "warmup_count": options.warmup,
        "pure_data_type": options.pure_data_type,
        "backend": backend.name,
        "backend_device": backend.device,
    }


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: shown only on a terminal, so logs and pipes stay clean
    return tqdm(total=total, unit="img", desc="infer", file=sys.stderr, disable=None if enabled else True)


def run(options: RunOptions, backend: Backend | None = None, progress: bool = True,
        source: BatchSource | None = None) -> RunResult:
    """Run the model over the inputs (or `loop` times over random data when there are none); see the module doc.

    `source` gives the batches (default: the `.bin` tensors of `options.inputs`).
    """
    outfmt = options.outfmt.upper()
    if outfmt not in dumps.OUTFMTS:
        raise fail(f"unknown --outfmt {options.outfmt!r}; expected one of {', '.join(dumps.OUTFMTS)}")
    if options.loop < 1 or options.warmup < 0:
        raise fail("--loop must be at least 1 and --warmup at least 0")
    if source is None and options.inputs is not None:
        source = TensorFiles(options.inputs)
    own_backend = backend is None
    if backend is None:
        backend = open_backend(options.model, options.backend, options.device, options.threads)
    try:
        return _run(options, backend, source, outfmt, progress)
    finally:
        if own_backend:
            backend.close()


def _run(options: RunOptions, backend: Backend, source: BatchSource | None, outfmt: str,
         progress: bool) -> RunResult:
    files = source.samples if source is not None else []
    geometry = resolve_geometry(backend.input, options.input_size, source.size_hint() if source else None)
    batch_size = resolve_batch_size(backend.input, options.batch_size)
    batch_size, note = guards.fit_batch_to_inputs(batch_size, len(files), backend.input.batch is not None)
    guards.check_batch_memory(batch_size, geometry.nbytes)
    if source is not None:
        source.check(geometry)
    if note and options.batch_size is not None:  # the default batch is capped without a word
        print(f"note: {note}", file=sys.stderr)
    if options.output_dirname is None:
        options.output_dirname = default_output_dirname()
    dirname = options.output_dirname.rstrip("/")
    # ais_bench joins it to --output: "a/b" is a sub-folder, and "x/" puts the summary inside x/ (x/_summary.json)
    if not dirname or dirname.startswith("/") or ".." in dirname.split("/") or dirname in (".",):
        raise fail(f"--output_dirname must be a folder name relative to OUTPUT, got {options.output_dirname!r}")

    seen: set[str] = set()
    for item in files:
        if item.stem in seen:
            raise fail(f"two inputs share the name {item.stem!r}; their dumps would overwrite each other")
        seen.add(item.stem)

    dump_dir = summary_file = None
    kept: dict[int, list[Path]] = {}
    todo = list(enumerate(files))
    if options.output_root is not None:
        dump_dir = Path(options.output_root) / dirname
        summary_file = summary.summary_path(Path(options.output_root), options.output_dirname)
        if (check_run_paths := getattr(backend, "check_run_paths", None)) is not None:  # ais_bench's path rules
            # streamed images never reach ais_bench (their arrays do): only tensor files are its inputs
            tensor_files = [Path(item.infile) for item in files] if isinstance(source, TensorFiles) else []
            check_run_paths(options.inputs if tensor_files else None, tensor_files, Path(options.output_root),
                            dump_dir)
        _guard_outputs(options.inputs, files, dump_dir, summary_file)
        try:
            _makedirs(dump_dir, getattr(backend, "output_dir_mode", 0o777))
        except OSError as err:
            raise fail(f"cannot create output folder {dump_dir}: {err.strerror or err}") from None
        planned = [dumps.dump_path(dump_dir, item.stem, i, outfmt).name
                   for item in files for i in range(len(backend.output_names))]
        guards.claim_dump_folder(dump_dir, planned, options.resume, summary_file)  # removes only what infer.py wrote
        if options.resume:
            _clear_temporaries(dump_dir)
            for index, item in enumerate(files):
                existing = _existing_dumps(dump_dir, item.stem, len(backend.output_names), outfmt)
                if existing is not None:
                    kept[index] = existing
            todo = [(i, item) for i, item in todo if i not in kept]

    rng = np.random.default_rng(options.seed)
    if options.inputs is None:
        dtype = tensors.layout_dtype(geometry.layout)
        high = 256 if dtype == np.uint8 else 1
        random_batch = (rng.integers(0, high, (batch_size, *geometry.shape)).astype(dtype) if high == 256
                        else rng.standard_normal((batch_size, *geometry.shape), dtype=np.float32))
        if options.pure_data_type == "zero":
            random_batch[...] = 0
    compute_ms: list[float] = []
    h2d_ms: list[float] = []
    d2h_ms: list[float] = []
    filesinfo: dict[str, dict] = {}
    batches = padded = scored = 0
    start = time.perf_counter()

    def record(timing) -> None:
        compute_ms.append(timing.compute_ms)
        h2d_ms.extend(timing.h2d_ms)
        d2h_ms.extend(timing.d2h_ms)

    if options.inputs is None:
        for _ in range(options.warmup):
            backend.run(random_batch)
        for _ in range(options.loop):
            record(backend.run(random_batch)[1])
            batches += 1
    else:
        written = []
        overlap = not backend.compute_on_host  # see Backend.compute_on_host
        with (_io_executor(overlap) as writer, _progress(len(todo), progress) as bar,
              contextlib.closing(source.batches(todo, batch_size, geometry, overlap)) as source_batches):
            for number, batch in enumerate(source_batches):
                chunk = batch.rows
                if number == 0:
                    for _ in range(options.warmup):
                        backend.run(batch.array)
                for _ in range(options.loop):
                    outputs, timing = backend.run(batch.array)
                    record(timing)
                batches += 1
                padded += batch_size - len(chunk)
                scored += len(chunk)
                if dump_dir is not None:
                    written.append(writer.submit(_write_dumps, chunk, outputs, dump_dir, outfmt))
                bar.update(batch.consumed)
            for future in written:  # re-raises a failed write here, before any summary is written
                filesinfo.update(future.result())
    wall_s = time.perf_counter() - start

    for index, paths in kept.items():
        filesinfo[str(index)] = {"infiles": [files[index].infile], "outfiles": [str(p) for p in paths]}
    # numbered 0.. in input order over the inputs that have dumps: an unreadable image leaves no gap,
    # exactly as when preprocess.py left out its tensor
    filesinfo = {str(number): entry for number, (_, entry)
                 in enumerate(sorted(filesinfo.items(), key=lambda kv: int(kv[0])))}
    failures_file = None
    if source is not None and options.output_root is not None:
        failures_file = source.write_reports(Path(options.output_root))
    result_summary = summary.build_summary(filesinfo, _summary_args(options, backend, batch_size),
                                           compute_ms, h2d_ms, d2h_ms, batch_size)
    if summary_file is not None:
        try:
            summary.write_summary(summary_file, result_summary)
        except OSError as err:
            raise cannot_write(summary_file, err) from None
    failures = list(source.failures) if source is not None else []
    return RunResult(result_summary, summary_file, dump_dir, scored, batches, padded, len(kept),
                     wall_s, batch_size, backend.name, backend.device,
                     summary.performance_summary_lines(result_summary, batch_size, options.display_all_summary),
                     failures, failures_file)


def summary_line(result: RunResult) -> str:
    """The one-line report that ends a run: counts, rates, where the results are."""
    images = result.samples if result.samples else result.batches * result.batch_size
    rate = images / result.wall_s if result.wall_s > 0 else 0.0
    data = "zero" if result.summary["args"].get("pure_data_type") == "zero" else "random"
    what = f"{result.samples} inputs" if result.samples or result.skipped else f"{images} {data} inputs"
    parts = [
        f"infer: {what} in {result.batches} batches of {result.batch_size}"
        + (f" ({result.padded} padding rows)" if result.padded else "")
        + (f", {result.skipped} kept from an earlier run" if result.skipped else ""),
        f"{result.backend} on {result.device}",
        f"{result.wall_s:.2f} s wall, {rate:.1f} img/s end to end",
        f"compute throughput {result.summary['throughput']:.1f} img/s",
    ]
    if result.failures:
        parts.append(f"{len(result.failures)} unreadable, listed in {result.failures_file}")
    if result.dump_dir is not None:
        parts.append(f"dumps in {result.dump_dir}, summary {result.summary_file}")
    return "; ".join(parts)

