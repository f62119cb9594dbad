"""Throughput of the inference runner on the fused RepVGG-A0 ONNX model, against a bare ONNX Runtime loop and
against this machine's measured FP32 peak, side by side in one run.

    python bench/bench_infer.py [--images 96] [--repeats 5] [--threads N]

Builds a random-weight RepVGG-A0 checkpoint, exports the fused model with pth2onnx.py and
writes `--images` float32 3x224x224 `.bin` tensors into a temporary folder, then for batch
1 and 16 times, interleaved and repeated (`--repeats`, medians reported):

- runner: `repvgg_pipeline.runner.run` in-process on an already loaded model, i.e. reading the
  `.bin` files, batching, `session.run`, writing every dump and the summary json, end to end;
- bare: the same ONNX Runtime session options, `session.run` over the same data already in
  memory, nothing else: the ceiling for any runner on this machine.

The FP32 peak is measured in the same run, between the repetitions: 2048^3 and 4096^3 sgemm
with numpy and with torch (same thread count), the best of all (a peak is a maximum, not a
median). The model's FLOP count is computed from the ONNX graph itself (2 x multiply-adds
of every Conv and Gemm) and compared with the 2.72 GFLOP quoted in the issue.

Goals (issue 4): runner overhead over bare <= 3 % at both batch sizes; bare bs16 >= 85 % of the peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repvgg_pipeline import runner  # noqa: E402
from repvgg_pipeline.backends.onnxruntime import OnnxRuntimeBackend, session_options  # noqa: E402
from repvgg_pipeline.cli import usable_cores  # noqa: E402
from repvgg_pipeline.formats import tensors  # noqa: E402

OVERHEAD_GOAL = 0.03
PEAK_GOAL = 0.85
QUOTED_GFLOP = 2.72
SIZE = 224


def model_gflop(onnx_path: Path) -> float:
    """FLOPs of one image (2 x multiply-adds of Conv and Gemm), from the graph's inferred shapes."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = model.graph
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    weights = {init.name: list(init.dims) for init in graph.initializer}
    macs = 0
    for node in graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            cout, cin_per_group, kh, kw = weights[node.input[1]]
            macs += cout * out[2] * out[3] * cin_per_group * kh * kw
        elif node.op_type in ("Gemm", "MatMul"):
            rows, cols = weights[node.input[1]]
            macs += rows * cols
    return 2 * macs / 1e9


def matmul_session(threads: int):
    """An ONNX Runtime session of one FP32 MatMul: sgemm through the same library (MLAS) that runs the model.

    numpy's OpenBLAS and torch may not use every vector unit of a new CPU (on a Zen 5 here they
    reached about 60 % of what ONNX Runtime's own sgemm does), which would make the model look
    faster than the "peak"; the peak is the best of all three.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "n"]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return ort.InferenceSession(model.SerializeToString(),
                                sess_options=session_options(threads), providers=["CPUExecutionProvider"])


def sgemm_gflops(threads: int, sizes: tuple[int, ...] = (2048, 4096)) -> dict[str, float]:
    """FP32 matrix multiply GFLOP/s with numpy, torch and ONNX Runtime, best over `sizes`."""
    import torch

    torch.set_num_threads(threads)
    session = matmul_session(threads)
    rng = np.random.default_rng(0)
    results = {"numpy": 0.0, "torch": 0.0, "onnxruntime": 0.0}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        for name, fn in (("numpy", lambda a=a, b=b: a @ b), ("torch", lambda ta=ta, tb=tb: torch.mm(ta, tb)),
                         ("onnxruntime", lambda a=a, b=b: session.run(None, {"a": a, "b": b}))):
            fn()
            start = time.perf_counter()
            fn()
            results[name] = max(results[name], 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return results


def export_model(work: Path) -> Path:
    from repvgg_model import write_random_checkpoint

    checkpoint, onnx_path = work / "a0.pth", work / "repvgg.onnx"
    write_random_checkpoint(checkpoint, arch="RepVGG-A0", seed=0)
    subprocess.run([sys.executable, str(ROOT / "pth2onnx.py"), str(checkpoint), str(onnx_path), "--skip-verify"],
                   check=True, capture_output=True)
    return onnx_path


def write_inputs(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i:05d}.bin"
        tensors.write_tensor(path, rng.standard_normal((3, SIZE, SIZE), dtype=np.float32))
        paths.append(path)
    return paths


def time_runner(backend, inputs: Path, out: Path, batch: int) -> tuple[float, float]:
    """(end-to-end img/s, img/s of the session.run calls alone as the runner's summary reports them)."""
    options = runner.RunOptions(model=Path("unused"), inputs=inputs, output_root=out, output_dirname=f"bs{batch}",
                                batch_size=batch, warmup=0)
    start = time.perf_counter()
    result = runner.run(options, backend=backend, progress=False)
    elapsed = time.perf_counter() - start
    return result.samples / elapsed, result.summary["throughput"]


def time_bare(session, name: str, batches: list[np.ndarray], images: int) -> float:
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {name: batch})
    return images / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="input files (a multiple of 16; default 96)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions, medians reported")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="ONNX Runtime / torch threads")
    parser.add_argument("--json", action="store_true", help="also print the figures as json")
    args = parser.parse_args()

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path = export_model(work)
        gflop = model_gflop(onnx_path)
        paths = write_inputs(work / "bins", args.images)
        data = np.stack([np.fromfile(p, dtype=np.float32).reshape(3, SIZE, SIZE) for p in paths])
        backend = OnnxRuntimeBackend(onnx_path, threads=args.threads)
        bare = ort.InferenceSession(str(onnx_path), sess_options=session_options(args.threads),
                                    providers=["CPUExecutionProvider"])
        name = bare.get_inputs()[0].name
        batch_sets = {}
        for batch in (1, 16):
            count = len(paths) // batch * batch
            batch_sets[batch] = [np.ascontiguousarray(data[i:i + batch]) for i in range(0, count, batch)]
            for _ in range(2):  # warm both sessions at this shape
                bare.run(None, {name: batch_sets[batch][0]})
                backend.run(batch_sets[batch][0])
        runs: dict[int, dict[str, list[float]]] = {
            b: {"runner": [], "runner_compute": [], "bare": []} for b in batch_sets}
        peak_runs: list[dict[str, float]] = []
        for _ in range(args.repeats):  # interleaved, so a noisy moment hits every figure alike
            for batch, batches in batch_sets.items():
                count = len(batches) * batch
                end_to_end, compute_only = time_runner(backend, work / "bins", work / "out", batch)
                runs[batch]["runner"].append(end_to_end)
                runs[batch]["runner_compute"].append(compute_only)
                runs[batch]["bare"].append(time_bare(bare, name, batches, count))
            peak_runs.append(sgemm_gflops(args.threads))
        figures = {f"bs{b}": {k: statistics.median(v) for k, v in r.items()} for b, r in runs.items()}
        peaks = {lib: max(p[lib] for p in peak_runs) for lib in peak_runs[0]}

    peak = max(peaks.values())
    print(f"machine: {usable_cores()} usable cores, {args.threads} threads; onnxruntime {ort.__version__}; "
          f"{args.images} images; medians of {args.repeats} interleaved runs")
    print("FP32 peak (best 2048^3/4096^3 sgemm): "
          + ", ".join(f"{lib} {gflops:.1f}" for lib, gflops in peaks.items()) + f" GFLOP/s -> peak {peak:.1f} GFLOP/s")
    print(f"fused RepVGG-A0: {gflop:.3f} GFLOP per image from the ONNX graph (issue quotes {QUOTED_GFLOP}; "
          f"ratio {gflop / QUOTED_GFLOP:.3f})")
    print(f"{'batch':>5}  {'runner img/s':>12}  {'(its run calls)':>15}  {'bare img/s':>10}  {'overhead':>8}  "
          f"{'bare GFLOP/s':>12}  {'% of peak':>9}  {'runner % of peak':>16}")
    verdicts = []
    for batch in (1, 16):
        fig = figures[f"bs{batch}"]
        overhead = 1 - fig["runner"] / fig["bare"]
        bare_gflops, runner_gflops = fig["bare"] * gflop, fig["runner"] * gflop
        fig.update(overhead=overhead, bare_gflops=bare_gflops, bare_of_peak=bare_gflops / peak,
                   runner_of_peak=runner_gflops / peak)
        print(f"{batch:>5}  {fig['runner']:>12.1f}  {fig['runner_compute']:>15.1f}  {fig['bare']:>10.1f}  "
              f"{overhead * 100:>7.2f}%  "
              f"{bare_gflops:>12.1f}  {bare_gflops / peak * 100:>8.1f}%  {runner_gflops / peak * 100:>15.1f}%")
        verdicts.append(f"bs{batch} overhead {overhead * 100:.2f}% "
                        f"({'meets' if overhead <= OVERHEAD_GOAL else 'misses'} <= {OVERHEAD_GOAL * 100:.0f}%)")
    share = figures["bs16"]["bare_of_peak"]
    verdicts.append(f"bs16 at {share * 100:.1f}% of peak ({'meets' if share >= PEAK_GOAL else 'misses'} "
                    f">= {PEAK_GOAL * 100:.0f}%)")
    print("goals: " + "; ".join(verdicts))
    if args.json:
        print(json.dumps({"peak_gflops": peaks, "model_gflop": gflop, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
