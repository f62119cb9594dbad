"""Streaming inference (images -> logits, no tensor files) against the two-step path, side by side in one run.

    python bench/bench_stream.py                      # 1,000 images of ../shared/data/imagenet_one_per_class
    python bench/bench_stream.py --images 200 --repeats 1      # quick look

Fused RepVGG-A0 (random weights, exported by pth2onnx.py), batch 16, the same images every time:

(a) on this machine's CPU, where compute and preprocessing share the cores:
    - two-step: preprocess.py (its workers) then infer.py over the `.bin` files;
    - stream: infer.py on the image folder (the workers decode up to 2 batches ahead, during compute);
    - stream, depth 0: the workers decode each batch only between computes, with every core (the
      alternative schedule, to show which one this machine prefers).
    Goal: stream <= 1.05 x two-step.
(b) with a simulated off-host device (`SleepingDevice`: sleeps a fixed time per batch, compute_on_host False),
    the sleep chosen so compute time == preprocess time (the case where a sum would be twice the max):
    - preprocess time P: the stream with a zero-time device (decode, batch, write dumps);
    - compute time C: batches x sleep;
    Goal: stream wall <= 1.15 x max(P, C) (the sum would be 2 x).
(c) peak memory of `infer.py` streaming as a user runs it (a subprocess), RSS and PSS summed over the
    process tree (the workers included; PSS counts pages shared after fork once), at 100 and 1,000 images
    of ../shared/data/imagenet_val_1300 (`--memory-data`): flat means bounded by the queue depth.

Everything runs in this process (preprocess.py through its `main`, the runner with an already loaded model),
so interpreter start and model load are out of every figure; repeats are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import preprocess  # noqa: E402
from repvgg_pipeline import runner  # noqa: E402
from repvgg_pipeline.backends.base import BatchTiming, InputSpec  # noqa: E402
from repvgg_pipeline.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from repvgg_pipeline.cli import run_cli, usable_cores  # noqa: E402
from repvgg_pipeline.dataset import find_images  # noqa: E402
from repvgg_pipeline.formats.tensors import FLOAT32_CHW  # noqa: E402
from repvgg_pipeline.sources.images import ImageStream, StreamOptions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
BATCH = 16
ON_HOST_GOAL = 1.05
OFF_HOST_GOAL = 1.15


class SleepingDevice:
    """A stand-in NPU: `run` sleeps `seconds` per batch (the host is free meanwhile) and returns zero logits."""

    name = "simulated-npu"
    device = "sleep"
    compute_on_host = False
    output_names = ["output1"]

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.input = InputSpec("actual_input_1", None, FLOAT32_CHW, 3, 224, 224)

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        time.sleep(self.seconds)
        return [np.zeros((len(batch), 1000), np.float32)], BatchTiming(self.seconds * 1000)

    def close(self) -> None:
        pass


def export_model(work: Path) -> Path:
    """Random-weight RepVGG-A0 -> fused ONNX, in subprocesses (torch stays out of this process and its forks)."""
    checkpoint, onnx_path = work / "a0.pth", work / "repvgg.onnx"
    subprocess.run([sys.executable, "-c", "import sys; from repvgg_model import write_random_checkpoint as w; "
                    "w(sys.argv[1], arch='RepVGG-A0', seed=0)", str(checkpoint)], check=True, cwd=ROOT)
    subprocess.run([sys.executable, str(ROOT / "pth2onnx.py"), str(checkpoint), str(onnx_path), "--skip-verify"],
                   check=True, capture_output=True)
    return onnx_path


def image_folder(source: Path, count: int, folder: Path) -> Path:
    """A flat folder of symlinks to the first `count` images of `source` (natural order)."""
    items = find_images(source).items[:count]
    if len(items) < count:
        raise SystemExit(f"{source} has only {len(items)} images, --images asks for {count}")
    folder.mkdir(parents=True)
    for item in items:
        (folder / item.path.name).symlink_to(item.path.resolve())
    return folder


def run_stream(backend, images: Path, out: Path, workers: int, depth: int = 2) -> float:
    shutil.rmtree(out, ignore_errors=True)
    options = runner.RunOptions(model=Path("unused"), inputs=images, output_root=out, output_dirname="bs16",
                                batch_size=BATCH, warmup=0)
    source = ImageStream(images, StreamOptions(workers=workers, depth=depth), exclude=out)
    start = time.perf_counter()
    runner.run(options, backend=backend, progress=False, source=source)
    return time.perf_counter() - start


def run_preprocess(images: Path, prep: Path, workers: int) -> float:
    shutil.rmtree(prep, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary line would break up the table
        code = run_cli(preprocess.get_args_parser, preprocess.main, [str(images), str(prep), "--workers",
                                                                      str(workers)])
    if code:
        raise SystemExit(f"preprocess.py failed with exit code {code}")
    return time.perf_counter() - start


def run_two_step(backend, images: Path, work: Path, workers: int) -> tuple[float, float]:
    """(preprocess.py seconds, infer.py seconds)."""
    pre = run_preprocess(images, work / "prep", workers)
    shutil.rmtree(work / "two", ignore_errors=True)
    options = runner.RunOptions(model=Path("unused"), inputs=work / "prep", output_root=work / "two",
                                output_dirname="bs16", batch_size=BATCH, warmup=0)
    start = time.perf_counter()
    runner.run(options, backend=backend, progress=False)
    return pre, time.perf_counter() - start


def tree_memory(root_pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over `root_pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    rss = pss = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def peak_memory(model: Path, images: Path, out: Path, workers: int) -> tuple[int, int, float]:
    """Peak (RSS, PSS) of the process tree of `infer.py MODEL IMAGES OUT`, sampled every 20 ms; and its wall time."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), str(model), str(images), str(out),
                             "--output_dirname", "bs16", "--batch-size", str(BATCH), "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"infer.py failed: {proc.stderr.read()}")
    return peak_rss, peak_pss, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "imagenet_one_per_class",
                        help="images for (a) and (b) (default: typical ImageNet sizes)")
    parser.add_argument("--memory-data", type=Path, default=DATA / "imagenet_val_1300", help="images for (c)")
    parser.add_argument("--images", type=int, default=1000, help="images for (a) and (b) (default 1000)")
    parser.add_argument("--memory-counts", type=int, nargs=2, default=(100, 1000), metavar=("SMALL", "LARGE"),
                        help="image counts of (c) (default 100 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions, medians reported")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="preprocessing workers (default: cores)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = export_model(work)
        images = image_folder(args.data, args.images, work / "images")
        backend = OnnxRuntimeBackend(model)
        backend.run(np.zeros((BATCH, 3, 224, 224), np.float32))  # warm
        batches = -(-args.images // BATCH)

        # (b)'s sleep: compute == preprocess; P measured first with a zero-time device
        p_first = run_stream(SleepingDevice(0.0), images, work / "p", args.workers)
        sleep = p_first / batches
        runs: dict[str, list[float]] = {k: [] for k in ("pre", "infer", "two", "stream", "depth0", "P", "sim")}
        for _ in range(args.repeats):  # interleaved: a noisy moment hits every figure alike
            pre, infer = run_two_step(backend, images, work, args.workers)
            runs["pre"].append(pre)
            runs["infer"].append(infer)
            runs["two"].append(pre + infer)
            runs["stream"].append(run_stream(backend, images, work / "s", args.workers))
            runs["depth0"].append(run_stream(backend, images, work / "o", args.workers, depth=0))
            runs["P"].append(run_stream(SleepingDevice(0.0), images, work / "p", args.workers))
            runs["sim"].append(run_stream(SleepingDevice(sleep), images, work / "sim", args.workers))
        med = {k: statistics.median(v) for k, v in runs.items()}
        identical = all((work / "two" / "bs16" / p.name).read_bytes() == p.read_bytes()
                        for p in (work / "s" / "bs16").iterdir())

        memory = {}
        for count in args.memory_counts:
            folder = image_folder(args.memory_data, count, work / f"mem{count}")
            memory[count] = peak_memory(model, folder, work / f"mem_out{count}", args.workers)

    print(f"machine: {usable_cores()} usable cores; {args.images} images of {args.data.name}, batch {BATCH}, "
          f"{args.workers} workers, RepVGG-A0 on ONNX Runtime CPU; medians of {args.repeats} interleaved runs")
    print("(a) compute on the host CPU")
    print(f"    two-step   {med['two']:8.2f} s  (preprocess.py {med['pre']:.2f} s + infer.py {med['infer']:.2f} s)")
    ratio = med["stream"] / med["two"]
    print(f"    stream     {med['stream']:8.2f} s  = {ratio:.3f} x two-step "
          f"({'meets' if ratio <= ON_HOST_GOAL else 'misses'} <= {ON_HOST_GOAL}); dumps byte-identical: {identical}")
    print(f"    depth 0    {med['depth0']:8.2f} s  = {med['depth0'] / med['two']:.3f} x two-step "
          "(decoding only between computes)")
    compute = sleep * batches
    bound = max(med["P"], compute)
    sim_ratio = med["sim"] / bound
    print(f"(b) simulated off-host device, {sleep * 1000:.1f} ms per batch of {BATCH}")
    print(f"    preprocess P {med['P']:.2f} s (stream, zero-time device; preprocess.py alone {med['pre']:.2f} s), "
          f"compute C {compute:.2f} s, sum {med['P'] + compute:.2f} s")
    print(f"    stream     {med['sim']:8.2f} s  = {sim_ratio:.3f} x max(P, C) "
          f"({'meets' if sim_ratio <= OFF_HOST_GOAL else 'misses'} <= {OFF_HOST_GOAL}; the sum would be "
          f"{(med['P'] + compute) / bound:.2f} x)")
    print(f"(c) peak memory of `infer.py` streaming, process tree ({args.memory_data.name})")
    for count, (rss, pss, wall) in memory.items():
        print(f"    {count:>5} images: RSS {rss / 2**20:7.1f} MiB, PSS {pss / 2**20:7.1f} MiB ({wall:.1f} s)")
    small, large = args.memory_counts
    print(f"    {large} vs {small} images: PSS x {memory[large][1] / memory[small][1]:.3f}, "
          f"RSS x {memory[large][0] / memory[small][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
