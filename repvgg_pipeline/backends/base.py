"""What the inference runner needs from a backend (the interface only; `backends/__init__.py` picks one).

The runner (`repvgg_pipeline.runner`) owns batching, padding, file I/O and the
ais_bench output layout; a backend only describes the model's input and runs one
batch, reporting the time of the compute call alone (the analog of ais_bench's
`NPU_compute_time`) and, where it really copies data between host and device, the
time of those copies. Keeping that split makes both backends produce the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
