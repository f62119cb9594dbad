"""Stand-in for `ais_bench.infer.interface` (tests only), on top of ONNX Runtime.

Implements the documented calls of the real InferSession (msit/ait benchmark
`interface.py`): `InferSession(device_id, model_path, acl_json_path=None, debug=False,
loop=1)`, `get_inputs()`/`get_outputs()` (descriptors with `name`, `shape`, `datatype`,
`realsize`, `size`), `infer(feeds, mode="static")` -> list of ndarrays, `summary()` with
`exec_time_list` in ms, `reset_summaryinfo()`, `free_resource()`, `finalize()`, and
`MemorySummary` with the H2D/D2H time lists. The model files are the stand-in `atc`'s
"OM" files (ONNX with a fixed batch). Like an NPU session, a static model refuses feeds
whose shape or dtype differs from its input, and a device id beyond
`$STANDIN_NPU_DEVICES` (default 1) fails to open.
"""

from __future__ import annotations

import enum
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np


class dtype(enum.Enum):  # noqa: N801 - named like aclruntime's enum, whose str() is "dtype.float32"
    float32 = 0
    uint8 = 4


@dataclass
class TensorDesc:
    name: str
    datatype: dtype
    shape: list[int]
    realsize: int
    size: int
    format: int = 0


@dataclass
class _Summary:
    exec_time_list: list[float] = field(default_factory=list)


_H2D: list[float] = []
_D2H: list[float] = []


class MemorySummary:
    @staticmethod
    def get_h2d_time_list() -> list[float]:
        return list(_H2D)

    @staticmethod
    def get_d2h_time_list() -> list[float]:
        return list(_D2H)

    @staticmethod
    def reset() -> None:
        _H2D.clear()
        _D2H.clear()


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1) -> None:
        import onnxruntime as ort

        if not 0 <= int(device_id) < int(os.environ.get("STANDIN_NPU_DEVICES", "1")):
            raise RuntimeError(f"[ERROR] acl.rt.set_device failed: device {device_id} not found, ret 107001")
        if not os.path.isfile(model_path):
            raise RuntimeError(f"[ERROR] load model from file failed, model file is {model_path}")
        self.device_id = device_id
        self.loop = loop
        self._session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        self._aipp = json.loads(meta["standin_aipp"]) if "standin_aipp" in meta else None
        graph_input = self._session.get_inputs()[0]
        n, c, h, w = graph_input.shape
        if self._aipp is None:
            shape, kind = [n, c, h, w], dtype.float32
        else:
            shape, kind = [n, h, w, c], dtype.uint8
        itemsize = 4 if kind is dtype.float32 else 1
        self._inputs = [TensorDesc(graph_input.name, kind, shape, itemsize * math.prod(shape),
                                   math.prod(shape))]
        self._outputs = [TensorDesc(o.name, dtype.float32, list(o.shape), 4 * math.prod(o.shape), math.prod(o.shape))
                         for o in self._session.get_outputs()]
        self._summary = _Summary()

    def get_inputs(self) -> list[TensorDesc]:
        return self._inputs

    def get_outputs(self) -> list[TensorDesc]:
        return self._outputs

    def _to_model_input(self, feed: np.ndarray) -> np.ndarray:
        """What the AIPP stage of an OM does: uint8 N,H,W,C -> (x - min_chn) * var_reci_chn as float32 N,C,H,W."""
        if self._aipp is None:
            return feed
        mins = np.array([self._aipp.get(f"min_chn_{i}", 0.0) for i in range(3)], dtype=np.float32)
        recis = np.array([self._aipp.get(f"var_reci_chn_{i}", 1.0) for i in range(3)], dtype=np.float32)
        return np.ascontiguousarray(((feed.astype(np.float32) - mins) * recis).transpose(0, 3, 1, 2))

    def infer(self, feeds, mode: str = "static", custom_sizes=100000, out_array: bool = True) -> list[np.ndarray]:
        if mode not in ("static", "dymbatch", "dymhw", "dymdims", "dymshape"):
            raise RuntimeError(f"wrong infer_mode:{mode}")
        if len(feeds) != len(self._inputs):
            raise RuntimeError("input datas and intensors nums not matched!")
        feed = np.ascontiguousarray(feeds[0])
        desc = self._inputs[0]
        if mode == "static" and (list(feed.shape) != desc.shape or feed.dtype != np.dtype(desc.datatype.name)):
            raise RuntimeError(f"input shape {list(feed.shape)} {feed.dtype} does not match the model's "
                               f"{desc.shape} {desc.datatype.name}: check the input size")
        start = time.perf_counter()
        device_feed = self._to_model_input(feed.copy())
        _H2D.append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        for _ in range(self.loop):
            outputs = self._session.run(None, {desc.name: device_feed})
        self._summary.exec_time_list.append((time.perf_counter() - start) * 1000.0 / self.loop)
        start = time.perf_counter()
        outputs = [np.array(o, copy=True) for o in outputs]
        _D2H.append((time.perf_counter() - start) * 1000.0)
        return outputs

    def summary(self) -> _Summary:
        return self._summary

    def reset_summaryinfo(self) -> None:
        self._summary = _Summary()

    def free_resource(self) -> None:
        self._session = None

    @staticmethod
    def finalize() -> None:
        pass
