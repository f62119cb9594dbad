"""Stand-in for `ais_bench.infer.interface` as of tools commit 9d6da90 (2023-06), on the aclruntime stand-in.

The API surface of that release (ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py),
written from its source; what differs from later releases, and what caught us out:

- `sumary()` (no `summary()`), `reset_sumaryinfo()`, and `exec_time_list` holding floats;
- `MemorySummary.get_H2D_time_list()` / `get_D2H_time_list()` (upper case), `reset()`;
- no `free_resource()`; `finalize()` is an instance method calling the session's `finalize`;
- `infer(feeds, mode)` acts only on "dymshape"/"dymdims": "static" and "dymbatch" run the
  model as it is set (no `set_staticbatch`, no batch size set);
- no path checks in the API (the CLI of this release has none either).
"""

from __future__ import annotations

import aclruntime
import numpy as np
from session_calls import SessionCalls


class InferSession(SessionCalls):
    acl = aclruntime  # this generation's, for the calls all generations share

    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1) -> None:
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        options = aclruntime.session_options()
        if acl_json_path is not None:
            options.acl_json_path = acl_json_path
        options.log_level = 1 if debug else 2
        options.loop = self.loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]

    def reset_sumaryinfo(self) -> None:
        self.session.reset_sumaryinfo()

    def sumary(self):
        return self.session.sumary()

    def finalize(self) -> None:
        if hasattr(self.session, "finalize"):
            self.session.finalize()

    def infer(self, feeds, mode: str = "static", custom_sizes=100000):
        inputs = []
        for feed in feeds:
            # exactly ndarray (not made contiguous, unlike later releases) or an aclruntime Tensor
            if type(feed) is np.ndarray or type(feed) is aclruntime.Tensor:
                inputs.append(feed)
            else:
                raise RuntimeError(f"type:{type(feed)} invalid")
        if mode in ("dymshape", "dymdims"):
            raise RuntimeError(f"stand-in: mode {mode} is not modelled")
        return self.run(inputs, out_array=True)


class MemorySummary:
    @staticmethod
    def get_H2D_time_list():  # noqa: N802 - this release's spelling
        return aclruntime.MemorySummary().H2D_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def get_D2H_time_list():  # noqa: N802 - this release's spelling
        return aclruntime.MemorySummary().D2H_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def reset() -> None:
        if hasattr(aclruntime, "MemorySummary"):
            aclruntime.MemorySummary().reset()
