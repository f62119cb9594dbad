"""What the inference runner needs from a backend, and how one is picked for a model file.

The runner (`repvgg_pipeline.runner`) owns batching, padding, file I/O and the
ais_bench output layout; a backend only describes the model's input and runs one
batch, reporting the time of the compute call alone (the analog of ais_bench's
`NPU_compute_time`) and, where it really copies data between host and device, the
time of those copies. Keeping that split makes both backends produce the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from repvgg_pipeline.cli import fail

BACKENDS = ("onnxruntime", "ais_bench")
_BACKEND_OF_SUFFIX = {".onnx": "onnxruntime", ".om": "ais_bench"}
# issue 10: the PyTorch reference (training checkpoints) and the FP16 preview of ATC's force_fp16 (ONNX)
BACKENDS += ("torch", "onnxruntime-fp16")
_BACKEND_OF_SUFFIX.update({".pth": "torch", ".pt": "torch", ".tar": "torch"})


@dataclass(frozen=True)
class InputSpec:
    """The model's single image input, as the runner needs it.

    `batch` is None for a dynamic batch axis. `layout` is `tensors.FLOAT32_CHW` for a
    plain model (float32 N,C,H,W) or `tensors.UINT8_HWC` for an OM with AIPP (uint8
    N,H,W,C); `height`/`width` are None when the model leaves them dynamic.
    """

    name: str
    batch: int | None
    layout: str
    channels: int
    height: int | None
    width: int | None


@dataclass
class BatchTiming:
    """Milliseconds spent on one batch: compute call alone, and host<->device copies (empty: none happened)."""

    compute_ms: float
    h2d_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)


class Backend(Protocol):
    """One loaded model, ready to run batches of the shape its `input` describes."""

    name: str  # "onnxruntime" or "ais_bench", written into the summary's args
    device: str  # human-readable, e.g. "CPUExecutionProvider" or "npu:0"
    input: InputSpec
    output_names: list[str]
    # True when the compute runs on this machine's CPU cores (ONNX Runtime on CPU). The runner
    # then reads and writes files between batches rather than in background threads, which
    # would take cores from the compute (bench_infer.py measured 14 % less compute at bs1).
    compute_on_host: bool

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        """Run one batch (shape (N, ...) in the input's layout); return every output and the timing."""
        ...

    def close(self) -> None:
        """Release the model and device resources."""
        ...


def backend_for(model_path: Path | str, backend: str | None = None) -> str:
    """The backend name for `model_path`: `backend` when given, else from the suffix (.onnx / .om)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise fail(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        return backend
    suffix = Path(model_path).suffix.lower()
    try:
        return _BACKEND_OF_SUFFIX[suffix]
    except KeyError:
        raise fail(f"cannot tell the backend from the model file name {Path(model_path).name!r} "
                   f"(expected .onnx, .om or a .pth/.pt/.tar checkpoint); pass --backend") from None


def open_backend(model_path: Path | str, backend: str | None = None, device: int = 0,
                 threads: int | None = None, **backend_options) -> Backend:
    """Load `model_path` with the chosen (or suffix-implied) backend.

    `device` is the NPU id for ais_bench and the CUDA device for ONNX Runtime when the
    CUDA execution provider is available; `threads` sets ONNX Runtime's intra-op threads
    (default: all cores). `backend_options` go to the backends that take them: `arch`,
    `use_ema`, `input_size` to "torch", `precision_mode` to "onnxruntime-fp16".
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise fail(f"model file not found: {model_path}")
    name = backend_for(model_path, backend)
    if name == "torch":
        from repvgg_pipeline.backends.torch import TorchBackend

        return TorchBackend(model_path, device=device, threads=threads, **backend_options)
    if name == "onnxruntime-fp16":
        from repvgg_pipeline.fp16_preview import Fp16PreviewBackend

        return Fp16PreviewBackend(model_path, device=device, threads=threads, **backend_options)
    if name == "onnxruntime":
        from repvgg_pipeline.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, device=device, threads=threads)
    from repvgg_pipeline.backends.ais_bench import AisBenchBackend

    return AisBenchBackend(model_path, device=device)
