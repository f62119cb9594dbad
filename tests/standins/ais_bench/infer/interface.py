"""Stand-in for `ais_bench.infer.interface` of the 2025 release line, on the aclruntime stand-in (tests only).

The API surface of ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py since 2024
(as of tools 630d2696, 2025-05), written from its source:

- `summary()` (the aclruntime call underneath is still `sumary()`), `reset_summaryinfo()`;
  `exec_time_list` holds (start_ms, end_ms) pairs;
- `MemorySummary.get_h2d_time_list()` / `get_d2h_time_list()` (lower case), `reset()`;
- `free_resource()`, and `finalize()` as a static method (`aclruntime.InferenceSession.finalize()`);
- `InferSession.__init__` checks the model path (interface_check.py `check_model_path_legality`
  -> common/path_security_check.py `check_path_legality(..., READ, suffix=["om"])`), the device
  id (an int in [0, 255]) and the loop count; see `path_rules.py`;
- `infer(feeds, mode)` wants a non-empty list (`check_list`), copies a non-contiguous array,
  and prepares the mode: "static" calls `set_staticbatch()`, "dymbatch" sets the batch size
  from the first dynamic axis of the feed.
"""

from __future__ import annotations

import aclruntime
import numpy as np

from ais_bench.infer.path_rules import READ, check_path

OM_MODEL_MAX_SIZE = 10 * 1024 * 1024 * 1024  # infer/args_check.py
LOOP_MAX_SIZE = 100000
_MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1) -> None:
        if not model_path:
            raise RuntimeError("empty model path!")
        check_path(model_path, READ, max_size=OM_MODEL_MAX_SIZE, suffix="om")
        if not isinstance(device_id, int):
            raise TypeError(f"device:{device_id} is not a integer!")
        if not 0 <= device_id <= 255:
            raise ValueError(f"device:{device_id} is illegal. legal value range is [0, 255]")
        if not isinstance(loop, int) or not 0 < loop <= LOOP_MAX_SIZE:
            raise ValueError(f"input value:{loop} is out of range. Please check.")
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        self.options = aclruntime.session_options()
        if acl_json_path is not None:
            self.options.acl_json_path = acl_json_path
        self.options.log_level = 1 if debug else 2
        self.options.loop = loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, self.options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]
        self.intensors_desc = self.session.get_inputs()
        self.outtensors_desc = self.session.get_outputs()

    @staticmethod
    def convert_tensors_to_host(tensors) -> None:
        for tensor in tensors:
            tensor.to_host()

    @staticmethod
    def convert_tensors_to_arrays(tensors) -> list[np.ndarray]:
        return [np.array(tensor) for tensor in tensors]

    @staticmethod
    def finalize() -> None:
        if hasattr(aclruntime.InferenceSession, "finalize"):
            aclruntime.InferenceSession.finalize()

    def get_inputs(self):
        self.intensors_desc = self.session.get_inputs()
        return self.intensors_desc

    def get_outputs(self):
        self.outtensors_desc = self.session.get_outputs()
        return self.outtensors_desc

    def set_loop_count(self, loop: int) -> None:
        self.session.options().loop = loop

    def set_staticbatch(self) -> None:
        self.session.set_staticbatch()

    def set_dynamic_batchsize(self, batch) -> None:
        self.session.set_dynamic_batchsize(batch)

    def set_custom_outsize(self, custom_sizes) -> None:
        self.session.set_custom_outsize(custom_sizes)

    def get_max_dym_batchsize(self) -> int:
        return self.session.get_max_dym_batchsize()

    def get_dym_aipp_input_exist(self) -> int:
        return self.session.get_dym_aipp_input_exist()

    def create_tensor_from_fileslist(self, desc, files):
        return self.session.create_tensor_from_fileslist(desc, files)

    def create_tensor_from_arrays_to_device(self, arrays):
        tensor = aclruntime.Tensor(arrays)
        tensor.to_device(self.device_id)
        return tensor

    def run(self, feeds, out_array: bool = False):
        if len(feeds) > 0 and isinstance(feeds[0], np.ndarray):  # raw bytes: address and size only
            inputs = [aclruntime.BaseTensor(a.__array_interface__["data"][0], a.nbytes) for a in feeds]
        else:
            inputs = feeds
        outputs = self.session.run(self.outputs_names, inputs)
        if out_array:
            self.convert_tensors_to_host(outputs)
            return self.convert_tensors_to_arrays(outputs)
        return outputs

    def reset_summaryinfo(self) -> None:
        self.session.reset_sumaryinfo()

    def summary(self):
        return self.session.sumary()

    def free_resource(self) -> None:
        if hasattr(self.session, "free_resource"):
            self.session.free_resource()

    def infer(self, feeds, mode: str = "static", custom_sizes=100000, out_array: bool = True):
        if not isinstance(feeds, list):
            raise ValueError("the list be checked is not a list!")
        if not feeds:
            raise ValueError("the list is empty")
        if not isinstance(out_array, bool):
            raise TypeError(f"value:{out_array} is not a bool!")
        if mode not in _MODES:
            raise ValueError("infer mode is illegal, Please check.")
        inputs, shapes = [], []
        for feed in feeds:
            if isinstance(feed, np.ndarray):
                feed = feed if feed.flags.c_contiguous else np.ascontiguousarray(feed)
            elif not isinstance(feed, aclruntime.Tensor):
                raise RuntimeError(f"type:{type(feed)} invalid")
            shapes.append(list(feed.shape))
            inputs.append(feed)
        if mode == "static":
            self.set_staticbatch()
        elif mode == "dymbatch":
            self._dymbatch_prepare(shapes)
        else:
            raise RuntimeError(f"stand-in: mode {mode} is not modelled")
        return self.run(inputs, out_array)

    def _dymbatch_prepare(self, shapes) -> None:
        descs = self.get_inputs()
        if len(shapes) != len(descs):
            raise RuntimeError("input datas and intensors nums not matched!")
        for desc, shape in zip(descs, shapes, strict=True):
            for expected, dim in zip(desc.shape, shape, strict=False):
                if expected < 0:
                    self.set_dynamic_batchsize(dim)
                    return
                if expected != dim:
                    raise RuntimeError("input datas and intensors dim not matched!")
        raise RuntimeError("not a dymbatch model!")


class MemorySummary:
    @staticmethod
    def get_h2d_time_list():
        return aclruntime.MemorySummary().H2D_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def get_d2h_time_list():
        return aclruntime.MemorySummary().D2H_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def reset() -> None:
        if hasattr(aclruntime, "MemorySummary"):
            aclruntime.MemorySummary().reset()
