"""Throughput of the FP16 preview (force_fp16 rewrite) against the float32 run of the same model, side by side.

    python bench/bench_fp16.py [--repeats 5] [--threads N] [--arch RepVGG-A0]

Builds a random-weight checkpoint, fuses and exports it as pth2onnx.py does, and loads the
model twice through the project's own backends with the same session options: plain
(`onnxruntime`) and the preview (`onnxruntime-fp16`, force_fp16). Then, for batch 1 and 16,
interleaved and repeated (`--repeats`, medians reported), times `backend.run` over the same
in-memory batches (the compute the runner's summary reports as throughput).

Goal (issue 10): preview throughput >= 0.75x float32 at both batch sizes. The preview adds one
Cast pair per activation (two passes over memory per layer), not extra convolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repvgg_model import fuse_model, load_checkpoint, write_random_checkpoint  # noqa: E402
from repvgg_model.export import export_onnx  # noqa: E402
from repvgg_pipeline.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from repvgg_pipeline.cli import usable_cores  # noqa: E402
from repvgg_pipeline.fp16_preview import Fp16PreviewBackend  # noqa: E402

GOAL = 0.75
BATCHES = {1: 16, 16: 3}  # batch size -> batches per timed pass (about the same images each)


def timed_pass(backend, batch: np.ndarray, count: int) -> float:
    """Images per second of `count` runs of `batch` (compute calls only, as the summary's throughput)."""
    start = time.perf_counter()
    for _ in range(count):
        backend.run(batch)
    return count * len(batch) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: usable cores)")
    parser.add_argument("--arch", default="RepVGG-A0")
    args = parser.parse_args()
    threads = args.threads or usable_cores()

    with tempfile.TemporaryDirectory() as folder:
        ckpt, onnx_path = Path(folder) / "model.pth", Path(folder) / "model.onnx"
        write_random_checkpoint(ckpt, arch=args.arch)
        loaded = load_checkpoint(ckpt)
        fused, _ = fuse_model(loaded.model)
        size = loaded.variant.input_size
        export_onnx(fused, onnx_path, size)
        plain = OnnxRuntimeBackend(onnx_path, threads=threads)
        started = time.perf_counter()
        preview = Fp16PreviewBackend(onnx_path, threads=threads, precision_mode="force_fp16")
        load_s = time.perf_counter() - started
    stats = preview.rewrite
    print(f"{args.arch} {size}x{size}, ONNX Runtime {plain.device}, {threads} threads; preview: "
          f"{stats.cast_pairs} Cast pairs, {stats.initializers} initializers rounded, "
          f"{stats.deferred} roundings moved past Relu/Flatten; rewrite + load {load_s:.2f} s")

    rng = np.random.default_rng(0)
    rows = []
    for batch_size, count in BATCHES.items():
        batch = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
        for backend in (plain, preview):  # warm-up
            backend.run(batch)
        fp32_rates, fp16_rates = [], []
        for _ in range(args.repeats):
            fp32_rates.append(timed_pass(plain, batch, count))
            fp16_rates.append(timed_pass(preview, batch, count))
        ratios = [b / a for a, b in zip(fp32_rates, fp16_rates, strict=True)]
        rows.append((batch_size, statistics.median(fp32_rates), statistics.median(fp16_rates),
                     statistics.median(ratios)))

    print(f"\n| batch | float32 img/s | FP16 preview img/s | preview / float32 (median of {args.repeats}) | goal |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    ok = True
    for batch_size, fp32, fp16, ratio in rows:
        ok &= ratio >= GOAL
        verdict = "OK" if ratio >= GOAL else "MISSED"
        print(f"| {batch_size} | {fp32:.1f} | {fp16:.1f} | {ratio:.3f} | >= {GOAL} {verdict} |")
    print(f"\nbench_fp16: preview at {', '.join(f'{r[3]:.2f}x' for r in rows)} of float32 (bs "
          f"{', '.join(str(r[0]) for r in rows)}); goal >= {GOAL}x: {'met' if ok else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
