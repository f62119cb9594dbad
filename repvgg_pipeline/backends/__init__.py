"""Inference backends, and where one is picked for a model file.

`base.py` holds the interface only; each backend is one module, imported only when
chosen (ais_bench exists only on an Ascend host, onnxruntime-gpu only on some).
A new backend is one line in `REGISTRY`: name -> (module, class). Its class is built
as `cls(model_path, device=device, threads=threads)`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from repvgg_pipeline.backends.base import Backend
from repvgg_pipeline.cli import fail

REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("repvgg_pipeline.backends.onnxruntime", "OnnxRuntimeBackend"),
    "ais_bench": ("repvgg_pipeline.backends.ais_bench", "AisBenchBackend"),
    "torch": ("repvgg_pipeline.backends.torch", "TorchBackend"),  # the train-time reference (issue 10)
    "onnxruntime-fp16": ("repvgg_pipeline.fp16_preview", "Fp16PreviewBackend"),  # ATC force_fp16 preview
}
BACKENDS = tuple(REGISTRY)
_BACKEND_OF_SUFFIX = {".onnx": "onnxruntime", ".om": "ais_bench", ".pth": "torch", ".pt": "torch", ".tar": "torch"}


def backend_for(model_path: Path | str, backend: str | None = None) -> str:
    """The backend name for `model_path`: `backend` when given, else from the suffix (.onnx / .om)."""
    if backend is not None:
        if backend not in REGISTRY:
            raise fail(f"unknown backend {backend!r}; expected one of {', '.join(REGISTRY)}")
        return backend
    suffix = Path(model_path).suffix.lower()
    try:
        return _BACKEND_OF_SUFFIX[suffix]
    except KeyError:
        raise fail(f"cannot tell the backend from the model file name {Path(model_path).name!r} "
                   f"(expected {' or '.join(_BACKEND_OF_SUFFIX)}); pass --backend") from None


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
    module_name, class_name = REGISTRY[backend_for(model_path, backend)]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(model_path, device=device, threads=threads, **backend_options)
