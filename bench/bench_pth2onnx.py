"""Benchmark of pth2onnx on RepVGG-A0: conversion time, and ONNX Runtime throughput of the fused vs the
train-time (--no-fuse) export at batch 1 and 16, measured side by side in one run.

    python bench/bench_pth2onnx.py [--repeats 5] [--threads N]

Each figure is the median of `--repeats` timings; fused and train-time runs alternate so that
machine noise hits both alike. Goal (issue 2): fused >= 1.1x the train-time throughput at bs16.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pth2onnx  # noqa: E402
from repvgg_model import write_random_checkpoint  # noqa: E402
from repvgg_model.export import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from repvgg_pipeline.cli import run_cli  # noqa: E402

GOAL_BS16 = 1.1


def convert(checkpoint: Path, output: Path, *options: str) -> float:
    """Seconds for one in-process pth2onnx run (load, fuse, export, check, verify)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_cli(pth2onnx.get_args_parser, pth2onnx.main, [str(checkpoint), str(output), *options])
    if code:
        raise SystemExit(f"pth2onnx failed with exit code {code}")
    return time.perf_counter() - start


def session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def images_per_second(sess: ort.InferenceSession, batch: np.ndarray, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
    return iterations * len(batch) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "RepVGG-A0-train.pth"
        write_random_checkpoint(checkpoint, "RepVGG-A0", seed=0)
        size = ["--input-size", str(args.input_size)]
        fused_onnx, train_onnx = work / "fused.onnx", work / "train.onnx"

        conversion: dict[str, list[float]] = {"fused": [], "train-time": []}
        for _ in range(max(1, args.repeats // 2 + 1)):
            conversion["fused"].append(convert(checkpoint, fused_onnx, *size))
            conversion["train-time"].append(convert(checkpoint, train_onnx, "--no-fuse", *size))

        sessions = {"fused": session(fused_onnx, args.threads), "train-time": session(train_onnx, args.threads)}
        rng = np.random.default_rng(0)
        throughput: dict[tuple[str, int], list[float]] = {}
        for batch_size, iterations in ((1, 30), (16, 4)):
            batch = rng.standard_normal((batch_size, 3, args.input_size, args.input_size), dtype=np.float32)
            for sess in sessions.values():  # warm-up: first runs allocate and plan
                images_per_second(sess, batch, 2)
            for _ in range(args.repeats):
                for name, sess in sessions.items():
                    throughput.setdefault((name, batch_size), []).append(images_per_second(sess, batch, iterations))

    med = {key: statistics.median(values) for key, values in throughput.items()}
    conv = {key: statistics.median(values) for key, values in conversion.items()}
    print(f"RepVGG-A0 {args.input_size}x{args.input_size}, ONNX Runtime {ort.__version__} CPU, "
          f"threads {args.threads or 'default'}, medians of {args.repeats} timings")
    print(f"{'':24}{'fused':>12}{'train-time':>14}{'fused / train':>16}")
    print(f"{'conversion time (s)':24}{conv['fused']:>12.2f}{conv['train-time']:>14.2f}"
          f"{conv['fused'] / conv['train-time']:>15.2f}x")
    for batch_size in (1, 16):
        fused, train = med[("fused", batch_size)], med[("train-time", batch_size)]
        print(f"{f'throughput bs{batch_size} (img/s)':24}{fused:>12.1f}{train:>14.1f}{fused / train:>15.2f}x")
    print("(conversion: a time, so above 1x means the fused conversion takes longer; it includes the fusion)")
    ratio16 = med[("fused", 16)] / med[("train-time", 16)]
    verdict = "met" if ratio16 >= GOAL_BS16 else "NOT met"
    print(f"goal fused >= {GOAL_BS16}x train-time at bs16: {ratio16:.2f}x, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
