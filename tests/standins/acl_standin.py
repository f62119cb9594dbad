"""CPU stand-in for ais_bench's compiled module `aclruntime`, one per generation (tests only).

`make_aclruntime(generation)` returns the attributes of the module as built from Huawei's
`tools` repository, folder ais-bench_workload/tool/ais_bench/backend (paths below are in it):

- "2023": tools commit 9d6da90 (2023-06), the release line of 2022-10 to 2024-01;
- "2025": the release line since 2024 (as of tools 630d2696, 2025-05).

Written from that source, not from the documentation; each behaviour cites where it comes from.
The "device" is ONNX Runtime running the stand-in OM files of `atc_standin.py` (ONNX with the
batch axis fixed, AIPP parameters in the metadata). What the tests rely on:

- Inputs arrive as raw bytes: `BaseTensor(address, nbytes)` or an `aclruntime.Tensor` made
  from any numpy array (the CLI reads input files as int8 arrays: ais_bench/infer/utils.py
  `get_file_content`). The bytes are interpreted with the model's own input type, as the
  NPU does; their size must equal the input's `realsize`, else execution fails
  (python/src/PyInferenceSession/PyInferenceSession.cpp `InferBaseTensorVector`;
  base/module/ModelInfer/ModelInferenceProcessor.cpp `SetInputsData`/`Execute`).
- `sumary().exec_time_list` (there is no `summary()` at this level in any generation):
  one float (ms) per execution in 2023 (base/include/Base/ModelInfer/
  ModelInferenceProcessor.h `std::vector<float> execTimeList`), one (start_ms, end_ms) pair
  of float32 ms since the session's creation in 2025 (`std::vector<pair<float, float>>`,
  `Execute()` measures against `sumaryInfo_.zero_point`).
- `options().loop = N`: inputs copied to the device once, the model executed N times, one
  exec_time_list entry each (`ModelInference_Inner`).
- `MemorySummary()` is one process-wide record (PyTensor.cpp, `GetMemorySummaryPtr`) with
  `H2D_time_list`/`D2H_time_list`: one sample per host->device or device->host copy
  (base/module/MemoryHelper/MemoryHelper.cpp `Memcpy`). The lists, like `exec_time_list`,
  are pybind11 `def_readwrite` vectors: every read returns a fresh copy of the whole list,
  so `STANDIN_READS` counts the elements copied (the cost a caller pays for re-reading).
- `InferenceSession.finalize()` is a method of the session in 2023 (destroys it and ACL)
  and a static method in 2025, where `free_resource()` destroys one session
  (PyInferenceSession.cpp `Finalize`, `FreeResource`, `def_static("finalize", ...)`).
- A device id at or beyond `$STANDIN_NPU_DEVICES` (default 1) fails to open, as
  aclrtSetDevice does on a host without that NPU.
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import os
import time
from pathlib import Path

import numpy as np

GENERATIONS = ("2023", "2025")
STANDIN_READS = {"elements_copied": 0}  # what re-reading the pybind lists has cost so far


class dtype(enum.Enum):  # noqa: N801 - aclruntime's enum (python/src/PyTensor/PyTensor.cpp RegistPyTensorEnumType)
    int8 = 0
    uint8 = 1
    int16 = 2
    uint16 = 3
    int32 = 4
    uint32 = 5
    int64 = 6
    uint64 = 7
    float16 = 8
    float32 = 9
    double = 10
    bool = 11


_NUMPY_OF = {dtype.int8: np.int8, dtype.uint8: np.uint8, dtype.float16: np.float16, dtype.float32: np.float32,
             dtype.int32: np.int32, dtype.int64: np.int64, dtype.double: np.float64}


def _dtype_of(array: np.ndarray) -> dtype:
    for kind, numpy_type in _NUMPY_OF.items():
        if array.dtype == numpy_type:
            return kind
    return dtype.uint8  # PyTensor.cpp FromNumpy: an unknown buffer format is taken as uint8


def _copy_list(values: list) -> list:
    STANDIN_READS["elements_copied"] += len(values)
    return list(values)


def make_aclruntime(generation: str) -> dict:
    """The public names of `aclruntime` of that generation."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}")
    pairs = generation == "2025"

    class _MemoryRecord:
        h2d: list[float] = []
        d2h: list[float] = []

    class MemorySummary:  # PyTensor.cpp: one shared record, lists copied on every read
        @property
        def H2D_time_list(self) -> list[float]:  # noqa: N802 - the binding's name
            return _copy_list(_MemoryRecord.h2d)

        @property
        def D2H_time_list(self) -> list[float]:  # noqa: N802 - the binding's name
            return _copy_list(_MemoryRecord.d2h)

        def reset(self) -> None:
            _MemoryRecord.h2d.clear()
            _MemoryRecord.d2h.clear()

    def _timed_copy(record: list[float], data: bytes) -> bytes:
        start = time.perf_counter()
        copied = bytes(data)
        record.append((time.perf_counter() - start) * 1000.0)
        return copied

    class BaseTensor:  # PyInferenceSession.cpp: py::init<int64_t, int64_t>() -> buf, size
        def __init__(self, buf: int, size: int) -> None:
            self.buf, self.size = int(buf), int(size)

        def _read(self) -> bytes:
            return ctypes.string_at(self.buf, self.size)

    class Tensor:  # PyTensor.cpp: FromNumpy copies the buffer to a host tensor; to_device/to_host copy (timed)
        def __init__(self, array=None) -> None:
            array = np.ascontiguousarray(array)
            self._dtype, self._shape = _dtype_of(array), [int(d) for d in array.shape]
            self._bytes, self._on_device = array.tobytes(), False

        @classmethod
        def _device_output(cls, array: np.ndarray) -> Tensor:
            tensor = cls(array)
            tensor._on_device = True
            return tensor

        def to_device(self, device_id: int) -> None:
            if not self._on_device:
                self._bytes, self._on_device = _timed_copy(_MemoryRecord.h2d, self._bytes), True

        def to_host(self) -> None:
            if self._on_device:
                self._bytes, self._on_device = _timed_copy(_MemoryRecord.d2h, self._bytes), False

        @property
        def shape(self) -> list[int]:
            return list(self._shape)

        @property
        def dtype(self) -> dtype:
            return self._dtype

        def __array__(self, dtype=None, copy=None) -> np.ndarray:  # the binding's buffer protocol (host only)
            if self._on_device:
                raise RuntimeError("tensor is on device, call to_host() first")
            array = np.frombuffer(self._bytes, dtype=_NUMPY_OF[self._dtype]).reshape(self._shape).copy()
            return array if dtype is None else array.astype(dtype)

    class session_options:  # noqa: N801 - PyInferenceSession.cpp "session_options"
        def __init__(self) -> None:
            self.loop, self.log_level, self.acl_json_path = 1, 2, ""

    class tensor_desc:  # noqa: N801 - PyInferenceSession.cpp "tensor_desc"
        def __init__(self, name: str, datatype: dtype, shape: list[int], fmt: int = 0) -> None:
            self.name, self.datatype, self.shape, self.format = name, datatype, shape, fmt
            count = math.prod(shape) if all(d > 0 for d in shape) else 0
            self.size = count
            self.realsize = count * np.dtype(_NUMPY_OF[datatype]).itemsize

    class sumary:  # noqa: N801 - PyInferenceSession.cpp "sumary": exec_time_list is a def_readwrite vector
        def __init__(self, runs: list) -> None:
            self._runs = runs

        @property
        def exec_time_list(self) -> list:
            return _copy_list(self._runs)

    class InferenceSession:
        def __init__(self, model_path: str, device_id: int, options: session_options | None = None) -> None:
            import onnxruntime as ort

            if not 0 <= int(device_id) < int(os.environ.get("STANDIN_NPU_DEVICES", "1")):
                raise RuntimeError(f"[ERROR] acl.rt.set_device failed: device {device_id} not found, ret 107001")
            try:
                self._ort = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
            except Exception as err:
                raise RuntimeError(f"[ERROR] load model from file failed, model file is {model_path}") from err
            self._options = options or session_options()
            meta = self._ort.get_modelmeta().custom_metadata_map
            self._aipp = json.loads(meta["standin_aipp"]) if "standin_aipp" in meta else None
            graph_input = self._ort.get_inputs()[0]
            n, c, h, w = (d if isinstance(d, int) else -1 for d in graph_input.shape)
            if self._aipp is None:
                self._inputs = [tensor_desc(graph_input.name, dtype.float32, [n, c, h, w])]
            else:  # an AIPP input takes uint8 N,H,W,C
                self._inputs = [tensor_desc(graph_input.name, dtype.uint8, [n, h, w, c])]
            self._outputs = [tensor_desc(o.name, dtype.float32, [d if isinstance(d, int) else -1 for d in o.shape])
                             for o in self._ort.get_outputs()]
            self._runs: list = []
            self._zero_point = time.perf_counter()  # 2025: InitSumaryInfo
            self._dynamic_batch: int | None = None
            self._alive = True

        def __repr__(self) -> str:
            return f"<aclruntime {generation} stand-in session>"

        def options(self) -> session_options:
            return self._options

        def get_inputs(self) -> list:
            return self._inputs

        def get_outputs(self) -> list:
            return self._outputs

        def sumary(self) -> sumary:
            return sumary(self._runs)

        def reset_sumaryinfo(self) -> int:
            self._runs.clear()
            return 0

        def set_staticbatch(self) -> None:
            self._dynamic_batch = None

        def set_dynamic_batchsize(self, batch: int) -> None:
            if self._inputs[0].shape[0] > 0:
                raise RuntimeError("model is not a dynamic batch model, ret 145000")
            self._dynamic_batch = int(batch)

        def set_custom_outsize(self, sizes) -> None:
            return None

        def get_dym_aipp_input_exist(self) -> int:  # 2025 CLI, set_session_options
            return 0

        def get_max_dym_batchsize(self) -> int:
            return self._dynamic_batch or 0

        def _input_bytes(self, feed) -> bytes:
            if isinstance(feed, BaseTensor):  # InferBaseTensorVector: copied host -> device, one H2D sample
                return _timed_copy(_MemoryRecord.h2d, feed._read())
            if isinstance(feed, Tensor):
                if not feed._on_device:
                    raise RuntimeError("input tensor is not on device")
                return feed._bytes
            raise TypeError(f"run(): incompatible function arguments: input of type {type(feed).__name__}")

        def _model_input(self, raw: bytes) -> np.ndarray:
            desc = self._inputs[0]
            shape = list(desc.shape)
            if shape[0] < 0:
                if self._dynamic_batch is None:
                    raise RuntimeError("dynamic batch model: batch size not set, ret 145000")
                shape[0] = self._dynamic_batch
            need = math.prod(shape) * np.dtype(_NUMPY_OF[desc.datatype]).itemsize
            if len(raw) != need:  # aclmdlExecute on a buffer of the wrong size
                raise RuntimeError(f"[ERROR] acl execute failed: input size {len(raw)} != model input size {need}, "
                                   f"ret 145000")
            feed = np.frombuffer(raw, dtype=_NUMPY_OF[desc.datatype]).reshape(shape)
            if self._aipp is None:
                return feed
            mins = np.array([self._aipp.get(f"min_chn_{i}", 0.0) for i in range(3)], dtype=np.float32)
            recis = np.array([self._aipp.get(f"var_reci_chn_{i}", 1.0) for i in range(3)], dtype=np.float32)
            return np.ascontiguousarray(((feed.astype(np.float32) - mins) * recis).transpose(0, 3, 1, 2))

        def run(self, output_names: list[str], feeds: list) -> list:
            if not self._alive:
                raise RuntimeError("[ERROR] session was freed, ret 507899")
            if len(feeds) != len(self._inputs):
                raise RuntimeError("intensors in and need not match, ret 507011")
            model_input = self._model_input(self._input_bytes(feeds[0]))
            outputs = None
            for _ in range(max(1, int(self._options.loop))):  # ModelInference_Inner: copy once, execute N times
                start = time.perf_counter()
                outputs = self._ort.run(list(output_names), {self._inputs[0].name: model_input})
                end = time.perf_counter()
                if pairs:
                    self._runs.append((float(np.float32((start - self._zero_point) * 1000.0)),
                                       float(np.float32((end - self._zero_point) * 1000.0))))
                else:
                    self._runs.append(float(np.float32((end - start) * 1000.0)))
            return [Tensor._device_output(np.asarray(out)) for out in outputs]

        def create_tensor_from_fileslist(self, desc, files: list[str]) -> Tensor:
            raw = b"".join(Path(f).read_bytes() for f in files)
            tensor = Tensor(np.frombuffer(raw, dtype=_NUMPY_OF[desc.datatype]))
            return tensor

        def _destroy(self) -> int:
            self._alive = False
            self._ort = None
            return 0

        if pairs:
            def free_resource(self) -> int:
                return self._destroy()

            @staticmethod
            def finalize() -> int:
                return 0
        else:
            def finalize(self) -> int:
                return self._destroy()

    names = {"dtype": dtype, "MemorySummary": MemorySummary, "BaseTensor": BaseTensor, "Tensor": Tensor,
             "session_options": session_options, "tensor_desc": tensor_desc, "sumary": sumary,
             "InferenceSession": InferenceSession, "GENERATION": generation}
    if pairs:
        class infer_options:  # noqa: N801 - 2025 pipeline mode only; present so the module has the name
            pass

        names["infer_options"] = infer_options
    return names
