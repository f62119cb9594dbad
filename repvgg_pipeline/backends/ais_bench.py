"""ais_bench backend: an OM model on an Ascend NPU through `ais_bench.infer.interface.InferSession`.

ais_bench (from Huawei's msit/ait tools, installed with CANN, not from PyPI) is imported
only when an OM model is opened, so the rest of the project runs without it. The calls
used are the documented interface API: `InferSession(device_id, model_path)`,
`get_inputs()` / `get_outputs()` (descriptors with `name`, `shape`, `datatype`,
`realsize`), `infer(feeds, mode=...)` returning a list of ndarrays, `summary()` (spelt
`sumary()` before 2023) whose `exec_time_list` holds the compute time of each run in ms,
`MemorySummary` for the host<->device copy times (newer versions only) and
`free_resource()`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from repvgg_pipeline.backends.base import BatchTiming, InputSpec
from repvgg_pipeline.cli import fail
from repvgg_pipeline.formats.tensors import FLOAT32_CHW, UINT8_HWC

INSTALL_HINT = ("install ais_bench and aclruntime (msit/ait benchmark wheels) and source "
                "/usr/local/Ascend/ascend-toolkit/set_env.sh; or run the .onnx model with --backend onnxruntime")


def _import_interface():
    try:
        from ais_bench.infer import interface
    except ImportError as err:
        raise fail(f"cannot run an OM model: the ais_bench Python package is not available ({err}); "
                   f"{INSTALL_HINT}") from None
    return interface


def _element_size(desc) -> int | None:
    """Bytes per element of an input, from its datatype name or, failing that, realsize / element count."""
    dtype_name = str(getattr(desc, "datatype", "")).rsplit(".", 1)[-1].lower()
    for name, size in (("uint8", 1), ("float32", 4), ("float16", 2), ("float", 4)):
        if dtype_name == name:
            return size
    shape = [int(d) for d in desc.shape]
    realsize = getattr(desc, "realsize", None)
    if realsize and all(d > 0 for d in shape):
        return int(realsize) // math.prod(shape)
    return None


class AisBenchBackend:
    """An OM model loaded with ais_bench's InferSession on NPU `device`."""

    name = "ais_bench"
    compute_on_host = False  # the NPU computes; host file I/O overlaps it

    def __init__(self, model_path: Path | str, device: int = 0) -> None:
        interface = _import_interface()
        self.device = f"npu:{device}"
        try:
            self.session = interface.InferSession(device, str(model_path))
        except Exception as err:  # aclruntime reports load failures as RuntimeError with ACL codes
            raise fail(f"cannot load OM model {model_path} on device {device}: {err}") from None
        self._memory_summary = getattr(interface, "MemorySummary", None)
        descs = self.session.get_inputs()
        if len(descs) != 1:
            raise fail(f"{model_path}: expected a model with one image input, found {len(descs)} inputs")
        desc = descs[0]
        shape = [int(d) for d in desc.shape]
        element_size = _element_size(desc)
        if len(shape) != 4 or element_size not in (1, 4):
            raise fail(f"{model_path}: input {desc.name!r} has shape {shape} and {element_size}-byte elements; "
                       f"expected float32 N,C,H,W or (AIPP) uint8 N,H,W,C")
        dims = [d if d > 0 else None for d in shape]
        if element_size == 4:
            layout, (channels, height, width) = FLOAT32_CHW, dims[1:]
        elif dims[3] in (1, 3):
            layout, (height, width, channels) = UINT8_HWC, dims[1:]
        else:  # some CANN versions describe an AIPP input in the model's original N,C,H,W order
            layout, (channels, height, width) = UINT8_HWC, dims[1:]
        self.input = InputSpec(desc.name, dims[0], layout, channels or 3, height, width)
        self.output_names = [out.name for out in self.session.get_outputs()]
        self._mode = "static" if dims[0] is not None else "dymbatch"
        self._h2d_seen = self._d2h_seen = 0
        if self._memory_summary is not None:
            self._memory_summary.reset()

    def _exec_times(self) -> list[float]:
        summary = getattr(self.session, "summary", None) or self.session.sumary
        return list(summary().exec_time_list)

    def _new_copy_times(self) -> tuple[list[float], list[float]]:
        """The H2D/D2H samples ais_bench recorded since the last call (none with versions lacking MemorySummary)."""
        if self._memory_summary is None:
            return [], []
        h2d = list(self._memory_summary.get_h2d_time_list())
        d2h = list(self._memory_summary.get_d2h_time_list())
        new_h2d, new_d2h = h2d[self._h2d_seen:], d2h[self._d2h_seen:]
        self._h2d_seen, self._d2h_seen = len(h2d), len(d2h)
        return [float(v) for v in new_h2d], [float(v) for v in new_d2h]

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        """One `InferSession.infer`; compute time from ais_bench's own record of that run."""
        try:
            outputs = self.session.infer([batch], mode=self._mode)
        except Exception as err:
            raise fail(f"ais_bench inference failed on a batch of shape {batch.shape}: {err}", exit_code=1) from None
        times = self._exec_times()
        h2d, d2h = self._new_copy_times()
        return [np.asarray(out) for out in outputs], BatchTiming(float(times[-1]) if times else 0.0, h2d, d2h)

    def close(self) -> None:
        """Free the model and device memory (`free_resource`, where the installed version has it)."""
        if self.session is not None and hasattr(self.session, "free_resource"):
            self.session.free_resource()
        self.session = None
