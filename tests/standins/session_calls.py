"""The `InferSession` calls that are the same in every ais_bench release line (tests only).

ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py passes these straight to the
aclruntime session, unchanged from tools 9d6da90 (2023-06) to 630d2696 (2025-05); the two
generation stand-ins (`ais_bench/infer/interface.py`, `gen2023/ais_bench/infer/interface.py`)
differ only in what is around them, so both take them from here. `run()` with numpy arrays passes
raw bytes (address and size, aclruntime's `BaseTensor`), as the CLI's array mode does.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


class SessionCalls:
    """Mixin for a stand-in `InferSession` whose `self.session` is an aclruntime stand-in session.

    `acl` is the generation's own aclruntime module, named by each subclass: the tests load both
    generations in one process, so a module-level import here would pin whichever came first.
    """

    acl: ModuleType
    session: object
    device_id: int
    outputs_names: list[str]

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

    def create_tensor_from_fileslist(self, desc, files):
        return self.session.create_tensor_from_fileslist(desc, files)

    def create_tensor_from_arrays_to_device(self, arrays):
        tensor = self.acl.Tensor(arrays)
        tensor.to_device(self.device_id)
        return tensor

    @staticmethod
    def convert_tensors_to_host(tensors) -> None:
        for tensor in tensors:
            tensor.to_host()

    @staticmethod
    def convert_tensors_to_arrays(tensors) -> list[np.ndarray]:
        return [np.array(tensor) for tensor in tensors]

    def run(self, feeds, out_array: bool = False):
        if len(feeds) > 0 and isinstance(feeds[0], np.ndarray):  # raw bytes: address and size only
            inputs = [self.acl.BaseTensor(a.__array_interface__["data"][0], a.nbytes) for a in feeds]
        else:
            inputs = feeds
        outputs = self.session.run(self.outputs_names, inputs)
        if out_array:
            self.convert_tensors_to_host(outputs)
            return self.convert_tensors_to_arrays(outputs)
        return outputs
