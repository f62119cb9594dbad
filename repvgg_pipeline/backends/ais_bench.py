"""ais_bench backend: an OM model on an Ascend NPU through `ais_bench.infer.interface.InferSession`.

Where ais_bench comes from: Huawei's `tools` repository (gitee.com/ascend/tools, mirrored
at github.com/Ascend/tools), folder `ais-bench_workload/tool/ais_bench`, as two wheels:
`aclruntime` (the compiled half, built against the installed CANN) and `ais_bench` (pure
Python). It is not part of CANN, and the PyPI package whose import name is also
`ais_bench` (`ais-bench-benchmark`, an LLM evaluation tool) is a different program: it is
recognised and named rather than half-imported. ais_bench is imported only when an OM
model is opened, so the rest of the project runs without it.

Every generation users still run is handled; what differs is read from the real source:

- `InferSession.summary()` is spelt `sumary()` before 2024 (`infer/interface.py`); its
  `exec_time_list` holds one float (ms) per model execution until late 2023 and one
  `(start_ms, end_ms)` pair since (`backend/base/include/Base/ModelInfer/
  ModelInferenceProcessor.h`: `std::vector<pair<float, float>> execTimeList`; the CLI's
  `infer/infer_process.py` takes `end - start`).
- `MemorySummary.get_H2D_time_list()`/`get_D2H_time_list()` (2022-10 to 2024-01, tools commit
  9d6da90) became `get_h2d_time_list()`/`get_d2h_time_list()`; older releases have no
  MemorySummary at all. `reset_sumaryinfo()` became `reset_summaryinfo()`.
- These lists are pybind11 `def_readwrite` vectors: each read copies the whole list. So,
  as the CLI does after its warm-up (`reset_summaryinfo()`, `MemorySummary.reset()`), the
  backend reads the few samples of one batch and resets, which keeps the cost per batch
  constant instead of growing with the run.
- Closing: `free_resource()` (newer releases) then `finalize()` (an instance method in
  2023, a static one calling `aclruntime.InferenceSession.finalize()` later), as the CLI
  ends (`infer/__main__.py` 2023, `infer/infer_process.py` later).

The paths the real CLI would refuse (`infer/common/path_security_check.py`,
`infer/args_check.py`) are refused here up front, with the reason: see `path_problem`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from repvgg_pipeline.backends.base import BatchTiming, InputSpec
from repvgg_pipeline.cli import fail, first_line
from repvgg_pipeline.formats.tensors import FLOAT32_CHW, UINT8_HWC

INSTALL_HINT = ("ais_bench is not part of CANN nor on PyPI: build or download its two wheels, aclruntime and "
                "ais_bench, from Huawei's tools repository (https://gitee.com/ascend/tools, folder "
                "ais-bench_workload/tool/ais_bench), pip install both, and source "
                "/usr/local/Ascend/ascend-toolkit/set_env.sh; or run the .onnx model with --backend onnxruntime")

# Folders the real ais_bench CLI creates (`makedirs_safe(path, PERMISSION_DIR)`) or accepts as --output:
# at most rwxr-x--- (infer/common/path_security_check.py, WRITE_FILE_NOT_PERMITTED_STAT).
OUTPUT_DIR_MODE = 0o750

# infer/common/path_security_check.py: PATH_WHITE_LIST_REGEX (Linux), and its length limits.
_ILLEGAL_PATH_CHAR = re.compile(r"[^_A-Za-z0-9/.-]")
_MAX_PATH_LENGTH, _MAX_NAME_LENGTH = 4096, 255
_OM_MAX_SIZE = 10 * 1024 ** 3  # infer/args_check.py OM_MODEL_MAX_SIZE
_INPUT_MAX_SIZE = 4 * 1024 ** 3  # infer/common/path_security_check.py MAX_SIZE_LIMITED_NORMAL_FILE (per input file)
_WRONG_PACKAGES = {"ais-bench-benchmark": "ais-bench-benchmark (an LLM evaluation tool)"}


def path_problem(path: Path | str, mode: str, max_size: int | None = None) -> str | None:
    """Why the real ais_bench would refuse `path` (None: it would accept it).

    `mode` "read" for a model, input file or input folder; "write" for the --output folder.
    The rules of `FileStat.check_linux_permission` in infer/common/path_security_check.py:
    the absolute path (links not resolved) may hold only A-Z a-z 0-9 _ - / . ; it must not be
    a symbolic link; the user must own it or be in its group; what is read must not be group-
    or other-writable and must be readable; an existing output folder must be at most 0o750
    and writable.
    """
    absolute = os.path.abspath(path)
    if len(absolute) > _MAX_PATH_LENGTH or any(len(part) > _MAX_NAME_LENGTH for part in absolute.split("/")):
        return f"path longer than {_MAX_PATH_LENGTH} characters or a name longer than {_MAX_NAME_LENGTH}"
    if match := _ILLEGAL_PATH_CHAR.search(absolute):
        return f"its absolute path {absolute} holds {match.group()!r}; ais_bench accepts only A-Z a-z 0-9 _ - / ."
    if not os.path.lexists(absolute):
        return None if mode == "write" else "it does not exist"
    if os.path.islink(absolute):
        return "it is a symbolic link, which ais_bench refuses: give the file or folder itself"
    info = os.stat(absolute)
    if info.st_uid != os.geteuid() and info.st_gid not in os.getgroups():
        return "it belongs to another user and group; ais_bench uses only paths of the current user or group"
    perms = stat.S_IMODE(info.st_mode)
    if mode == "read":
        if perms & (stat.S_IWGRP | stat.S_IWOTH):
            return f"it is group- or other-writable (mode {perms:o}); ais_bench reads nothing above 755: chmod go-w"
        if not os.access(absolute, os.R_OK) or not perms & stat.S_IRUSR:
            return "the current user cannot read it"
        if max_size is not None and stat.S_ISREG(info.st_mode) and info.st_size > max_size:
            return f"it is larger than ais_bench's limit of {max_size} bytes"
    else:
        if perms & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH):
            return f"its mode {perms:o} is above 750, which ais_bench refuses for an output folder: chmod 750"
        if not os.access(absolute, os.W_OK):
            return "the current user cannot write to it"
    return None


def check_paths(model: Path | str | None = None, inputs: Path | str | None = None,
                input_files: Iterable[Path | str] = (), output_root: Path | str | None = None,
                dump_dir: Path | str | None = None) -> None:
    """Refuse up front, with the reason, any path the real ais_bench CLI would refuse."""
    checks: list[tuple[str, Path | str | None, str, int | None]] = [
        ("OM model", model, "read", _OM_MAX_SIZE), ("input", inputs, "read", None),
        ("output folder", output_root, "write", None), ("output folder", dump_dir, "read", None)]
    checks += [("input file", f, "read", _INPUT_MAX_SIZE) for f in input_files]
    for role, path, mode, max_size in checks:
        if path is None or (role == "output folder" and mode == "read" and not os.path.lexists(path)):
            continue
        if problem := path_problem(path, mode, max_size):
            raise fail(f"ais_bench would refuse the {role} {path}: {problem}")
    if model is not None and Path(model).suffix != ".om":
        raise fail(f"ais_bench would refuse the OM model {model}: its name must end in .om")


def installed_versions() -> str:
    """'ais_bench X, aclruntime Y' from the installed distributions, for error messages."""
    found = []
    for name in ("ais_bench", "aclruntime"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (version unknown)")
    return ", ".join(found)


def _unrelated_ais_bench() -> str | None:
    """The name of an unrelated package that owns the `ais_bench` import name, if one is installed."""
    try:
        owners = importlib.metadata.packages_distributions().get("ais_bench", [])
    except Exception:  # a broken distribution's metadata must not hide the real error
        owners = []
    for owner in owners:
        normalised = re.sub(r"[-_.]+", "-", owner).lower()
        if normalised in _WRONG_PACKAGES:
            return f"{_WRONG_PACKAGES[normalised]} {importlib.metadata.version(owner)}"
    try:
        if importlib.util.find_spec("ais_bench.benchmark") is not None:  # that tool's own subpackage
            return _WRONG_PACKAGES["ais-bench-benchmark"]
    except (ImportError, ValueError):
        pass
    return None


def _import_interface():
    try:
        import ais_bench  # noqa: F401 - only to tell "absent" from "something else under that name"
    except ImportError as err:
        raise fail(f"cannot run an OM model: the ais_bench Python package is not available ({first_line(err)}); "
                   f"{INSTALL_HINT}") from None
    try:
        return importlib.import_module("ais_bench.infer.interface")
    except ImportError as err:
        if wrong := _unrelated_ais_bench():
            raise fail(f"cannot run an OM model: the installed 'ais_bench' is {wrong}, an unrelated package under "
                       f"the same import name, not Huawei's inference tool; uninstall it; {INSTALL_HINT}") from None
        if getattr(err, "name", None) == "aclruntime" or "aclruntime" in str(err):
            raise fail(f"cannot run an OM model: ais_bench is installed but its compiled half aclruntime does not "
                       f"load ({first_line(err)}); {INSTALL_HINT}") from None
        raise fail(f"cannot run an OM model: {installed_versions()} has no ais_bench.infer.interface "
                   f"({first_line(err)}); {INSTALL_HINT}") from None


def _first_attr(obj: object, *names: str) -> Callable | None:
    for name in names:
        if (value := getattr(obj, name, None)) is not None:
            return value
    return None


def _element_size(desc) -> int | None:
    """Bytes per element of an input, from its datatype name or, failing that, realsize / element count."""
    dtype_name = str(getattr(desc, "datatype", "")).rsplit(".", 1)[-1].lower()
    for name, size in (("uint8", 1), ("float32", 4), ("float16", 2), ("float", 4)):
        if dtype_name == name:
            return size
    shape = [int(d) for d in desc.shape]
    realsize = getattr(desc, "realsize", None)
    if realsize and all(d > 0 for d in shape):
        return int(realsize) // int(np.prod(shape))
    return None


def run_ms(sample: object) -> float:
    """One `exec_time_list` entry in ms: a float (until late 2023) or a (start_ms, end_ms) pair (since)."""
    if isinstance(sample, Sequence) and not isinstance(sample, str) and len(sample) == 2:
        return float(sample[1]) - float(sample[0])
    return float(sample)  # type: ignore[arg-type]


class AisBenchBackend:
    """An OM model loaded with ais_bench's InferSession on NPU `device`."""

    name = "ais_bench"
    compute_on_host = False  # the NPU computes; host file I/O overlaps it
    output_dir_mode = OUTPUT_DIR_MODE  # the runner creates its folders so that the real CLI accepts them too

    def __init__(self, model_path: Path | str, device: int = 0, threads: int | None = None) -> None:
        del threads  # the NPU has no host threads to set
        check_paths(model=model_path)
        interface = _import_interface()
        self.device = f"npu:{device}"
        self.session = None
        try:
            self.session = interface.InferSession(device, str(model_path))
        except Exception as err:  # aclruntime reports load failures as RuntimeError with ACL codes
            raise fail(f"cannot load OM model {model_path} on device {device}: {first_line(err)}") from None
        self._versions = installed_versions()
        self._summary = _first_attr(self.session, "summary", "sumary")
        if self._summary is None:
            self.close()
            raise fail(f"{self._versions}: InferSession has neither summary() nor sumary(); "
                       f"this ais_bench is not supported")
        self._reset_summary = _first_attr(self.session, "reset_summaryinfo", "reset_sumaryinfo")
        memory = getattr(interface, "MemorySummary", None)  # absent before 2022-10
        self._h2d = _first_attr(memory, "get_h2d_time_list", "get_H2D_time_list")
        self._d2h = _first_attr(memory, "get_d2h_time_list", "get_D2H_time_list")
        self._reset_memory = getattr(memory, "reset", None)
        self._seen = {"exec": 0, "h2d": 0, "d2h": 0}  # only used where a list cannot be reset
        descs = self.session.get_inputs()
        if len(descs) != 1:
            self.close()
            raise fail(f"{model_path}: expected a model with one image input, found {len(descs)} inputs")
        desc = descs[0]
        shape = [int(d) for d in desc.shape]
        element_size = _element_size(desc)
        if len(shape) != 4 or element_size not in (1, 4):
            self.close()
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
        self._dynamic_batch = dims[0] is None
        self._take_new_samples()  # start from empty lists, as the CLI does after its warm-up

    def check_run_paths(self, inputs: Path | None, input_files: Iterable[Path], output_root: Path | None,
                        dump_dir: Path | None) -> None:
        """The runner's paths, checked by the rules of the real CLI (see `path_problem`)."""
        check_paths(inputs=inputs, input_files=input_files, output_root=output_root, dump_dir=dump_dir)

    def _new(self, key: str, reader: Callable | None, resettable: bool) -> list:
        """The samples recorded since the last call: the whole (short) list when it is reset after each read."""
        if reader is None:
            return []
        samples = list(reader())
        if resettable:
            return samples
        new = samples[self._seen[key]:]
        self._seen[key] = len(samples)
        return new

    def _take_new_samples(self) -> tuple[list, list[float], list[float]]:
        try:
            runs = self._new("exec", lambda: self._summary().exec_time_list, self._reset_summary is not None)
            h2d = self._new("h2d", self._h2d, self._reset_memory is not None)
            d2h = self._new("d2h", self._d2h, self._reset_memory is not None)
            if self._reset_summary is not None:
                self._reset_summary()
            if self._reset_memory is not None:
                self._reset_memory()
        except (AttributeError, TypeError) as err:
            raise fail(f"{self._versions}: unexpected ais_bench API ({first_line(err)}); "
                       f"this ais_bench is not supported") from None
        return runs, [float(v) for v in h2d], [float(v) for v in d2h]

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        """One `InferSession.infer`; compute time from ais_bench's own record of that run."""
        try:
            if self._dynamic_batch:  # the 2023 infer() ignores mode="dymbatch": set the batch explicitly
                self.session.set_dynamic_batchsize(int(batch.shape[0]))
            outputs = self.session.infer([batch], mode="dymbatch" if self._dynamic_batch else "static")
        except Exception as err:  # aclruntime raises RuntimeError with ACL codes; older releases plain Exceptions
            raise fail(f"ais_bench inference failed on a batch of shape {batch.shape}: {first_line(err)}",
                       exit_code=1) from None
        runs, h2d, d2h = self._take_new_samples()
        try:
            compute_ms = sum(run_ms(sample) for sample in runs)
        except (TypeError, ValueError) as err:
            raise fail(f"{self._versions}: cannot read exec_time_list entries like {runs[:1]!r} "
                       f"({first_line(err)}); this ais_bench is not supported") from None
        return [np.asarray(out) for out in outputs], BatchTiming(compute_ms, h2d, d2h)

    def close(self) -> None:
        """Free the model (`free_resource`, newer releases) then ACL (`finalize`), as the ais_bench CLI ends."""
        session, self.session = self.session, None
        if session is None:
            return
        try:
            if (free := getattr(session, "free_resource", None)) is not None:
                free()
            if (finalize := getattr(session, "finalize", None)) is not None:
                finalize()
        except Exception as err:  # a failed release after the results are written: report, don't trace
            raise fail(f"ais_bench could not release the device: {first_line(err)}", exit_code=1) from None
