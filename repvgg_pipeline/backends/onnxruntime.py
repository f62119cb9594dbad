"""ONNX Runtime backend: the runner's engine on every machine without an Ascend NPU.

Session settings aim at throughput, as an OM on the NPU would: all graph optimisations,
intra-op threads = usable cores (override with `threads`), the CUDA execution provider
when onnxruntime-gpu offers it, else the CPU one.

Timing follows ais_bench's meaning: `compute_ms` is the `run` call alone. On CPU no
host<->device copy exists, so H2D/D2H record no samples (count 0) rather than a made-up
zero. On CUDA the input is copied to the device and the outputs back explicitly
through IO binding, so those copies are timed separately from the compute.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from repvgg_pipeline.backends.base import BatchTiming, InputSpec
from repvgg_pipeline.cli import fail, first_line, usable_cores
from repvgg_pipeline.formats.tensors import FLOAT32_CHW, UINT8_HWC

_LAYOUT_OF_TYPE = {"tensor(float)": FLOAT32_CHW, "tensor(uint8)": UINT8_HWC}


def _static_dim(dim: object) -> int | None:
    """An ONNX dimension as an int, or None when symbolic ('batch', '-1') or unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None


def session_options(threads: int | None = None):
    """The SessionOptions every ONNX Runtime session of the project uses (also the bench's bare baseline)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.log_severity_level = 3  # errors only: warnings would break the one-line-summary output
    ort.set_default_logger_severity(3)  # the same for the process-wide logger (messages outside a session)
    return options


class OnnxRuntimeBackend:
    """An ONNX model in an ONNX Runtime InferenceSession; see the module docstring for the timing rules."""

    name = "onnxruntime"

    def __init__(self, model_path: Path | str, device: int = 0, threads: int | None = None) -> None:
        import onnxruntime as ort

        providers: list = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device}))
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=session_options(threads),
                                                providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for an unreadable model
            raise fail(f"cannot load ONNX model {model_path}: {first_line(err)}") from None
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.compute_on_host = not self.on_cuda
        self.device = f"cuda:{device}" if self.on_cuda else "CPUExecutionProvider"
        self.device_id = device
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise fail(f"{model_path}: expected a model with one image input, found {len(inputs)} inputs")
        meta = inputs[0]
        layout = _LAYOUT_OF_TYPE.get(meta.type)
        if layout is None or len(meta.shape) != 4:
            raise fail(f"{model_path}: input {meta.name!r} is {meta.type} {meta.shape}; expected float32 N,C,H,W "
                       f"or uint8 N,H,W,C")
        dims = [_static_dim(d) for d in meta.shape]
        if layout == FLOAT32_CHW:
            channels, height, width = dims[1], dims[2], dims[3]
        else:
            height, width, channels = dims[1], dims[2], dims[3]
        if channels is None:
            raise fail(f"{model_path}: input {meta.name!r} has no fixed channel count ({meta.shape})")
        self.input = InputSpec(meta.name, dims[0], layout, channels, height, width)
        self.output_names = [out.name for out in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        """One `session.run` (CPU) or an IO-bound run with timed copies (CUDA)."""
        if self.on_cuda:
            return self._run_cuda(batch)
        feed = {self.input.name: batch}
        start = time.perf_counter()
        try:
            outputs = self.session.run(self.output_names, feed)
        except Exception as err:  # onnxruntime's own exception types; the runner checked shapes beforehand
            raise fail(f"ONNX Runtime failed on a batch of shape {batch.shape}: {first_line(err)}",
                       exit_code=1) from None
        compute_ms = (time.perf_counter() - start) * 1000.0
        return outputs, BatchTiming(compute_ms)

    def _run_cuda(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        start = time.perf_counter()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id)
        h2d_ms = (time.perf_counter() - start) * 1000.0
        binding.bind_ortvalue_input(self.input.name, device_input)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.device_id)
        start = time.perf_counter()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        compute_ms = (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        outputs = binding.copy_outputs_to_cpu()
        d2h_ms = (time.perf_counter() - start) * 1000.0
        return outputs, BatchTiming(compute_ms, [h2d_ms], [d2h_ms])

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it with the object)."""
        self.session = None
