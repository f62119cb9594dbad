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
from session_calls import SessionCalls

from ais_bench.infer.path_rules import READ, check_path

OM_MODEL_MAX_SIZE = 10 * 1024 * 1024 * 1024  # infer/args_check.py
LOOP_MAX_SIZE = 100000
_MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")


class InferSession(SessionCalls):
    acl = aclruntime  # this generation's, for the calls all generations share

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
    def finalize() -> None:
        if hasattr(aclruntime.InferenceSession, "finalize"):
            aclruntime.InferenceSession.finalize()

    def get_max_dym_batchsize(self) -> int:
        return self.session.get_max_dym_batchsize()

    def get_dym_aipp_input_exist(self) -> int:
        return self.session.get_dym_aipp_input_exist()

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
