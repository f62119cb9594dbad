"""FP16 preview: an ONNX model run the way ATC's `--precision_mode force_fp16` computes it, without an NPU.

An OM built with force_fp16 (ATC's default for inference on 310/310P) feeds the Cube unit
float16 data: the input, every weight and bias, and every tensor passed between ops is a
float16 value, while each op accumulates in float32 before its result is rounded back to
float16. The preview reproduces exactly that number format on ONNX Runtime, at speed, by
rewriting the graph:

- float initializers (weights, biases, constants) are rounded to float16 once, stored as float32;
- the image input and the float output of every op pass through a Cast(FLOAT16)-Cast(FLOAT)
  pair, i.e. are rounded to the nearest float16 (ties to even, as numpy's `astype(float16)`);
- ops themselves stay float32.

A pair is left out only where it cannot change a value: after ops that only select or move
values (Relu, MaxPool, Flatten, ...) when their input is already a float16 value, and between an
op and a single such consumer, whose output is rounded instead (rounding is monotone, so
`round(relu(x)) == relu(round(x))`). That keeps ONNX Runtime's Conv+Relu fusion intact.

`check_casts_survive` proves on a probe graph, with the session options the backend uses, that
ONNX Runtime does not fold the Cast pairs away (the whole preview would silently be float32).
What the preview cannot know is in the README ("FP16 preview").
"""

from __future__ import annotations

import functools
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repvgg_pipeline.backends.onnxruntime import OnnxRuntimeBackend, session_options
from repvgg_pipeline.cli import fail, first_line

FP16, FP32 = "fp16", "fp32"
DEFAULT_MODE = "force_fp16"

# ATC's --precision_mode values (CANN 5-8 documentation of `atc --precision_mode`), each mapped to
# the nearest of the two number formats the preview knows, with what is lost in the mapping.
PRECISION_MODES: dict[str, tuple[str, str | None]] = {
    "force_fp16": (FP16, None),
    "must_keep_origin_dtype": (FP32, None),
    "allow_fp32_to_fp16": (FP16, "matrix ops (Conv, Gemm) run in float16 as previewed; ATC would keep vector ops "
                                 "(pooling, element-wise) in float32 where supported"),
    "allow_mix_precision": (FP16, "ATC lowers the ops on its float16 list (Conv, Gemm, ReLU, pooling: all of "
                                  "RepVGG) to float16; previewed as force_fp16"),
    "allow_mix_precision_fp16": (FP16, "same as allow_mix_precision; previewed as force_fp16"),
    "allow_mix_precision_bf16": (FP16, "bfloat16 is not previewed; float16 shown instead (bfloat16 keeps 8 "
                                       "mantissa bits, so expect more drift)"),
    "allow_fp32_to_bf16": (FP16, "bfloat16 is not previewed; float16 shown instead (bfloat16 keeps 8 mantissa "
                                 "bits, so expect more drift)"),
    "force_lowerprecision": (FP16, "previewed as force_fp16"),
    "force_fp32": (FP16, "matrix ops take float16 inputs but write float32 outputs in ATC; previewed as "
                         "force_fp16, which also rounds those outputs (a pessimistic preview)"),
    "cube_fp16in_fp32out": (FP16, "matrix ops take float16 inputs but write float32 outputs in ATC; previewed "
                                  "as force_fp16, which also rounds those outputs (a pessimistic preview)"),
}

# Ops whose float output is a selection or rearrangement of input values: given float16 values they
# yield float16 values, and rounding commutes with them (round(op(x)) == op(round(x))), being monotone
# per element. Only single-float-input ops, so one deferred rounding stays one.
_VALUE_PRESERVING = frozenset({"Relu", "MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Squeeze",
                               "Unsqueeze", "Dropout", "Slice", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
                               "GlobalMaxPool", "ReduceMax", "ReduceMin"})
_SUFFIX = "__fp16preview"


@dataclass(frozen=True)
class PrecisionChoice:
    """What a `--precision_mode` value means for the preview: the number format and a note when approximated."""

    mode: str
    kind: str  # FP16 or FP32
    note: str | None


def resolve_precision_mode(mode: str | None) -> PrecisionChoice:
    """The preview's format for an ATC `--precision_mode` value (None: no flag, plain float32)."""
    if mode is None:
        return PrecisionChoice("must_keep_origin_dtype", FP32, None)
    key = mode.strip().lower()
    if key not in PRECISION_MODES:
        raise fail(f"unknown --precision_mode {mode!r}; ATC's values are {', '.join(PRECISION_MODES)}")
    kind, note = PRECISION_MODES[key]
    return PrecisionChoice(key, kind, note)


def round_fp16(array: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 value (ties to even), kept as float32.

    Beyond the float16 range (|x| >= 65520) the value becomes +-inf, as a float16 tensor would hold it.
    """
    with np.errstate(over="ignore"):
        return np.asarray(array, dtype=np.float32).astype(np.float16).astype(np.float32)


@dataclass
class RewriteStats:
    """What the rewrite did, for the report line and the tests."""

    initializers: int = 0  # float initializers / Constant tensors rounded
    cast_pairs: int = 0  # Cast(FLOAT16)-Cast(FLOAT) pairs inserted
    exact_outputs: int = 0  # op outputs left alone: already float16 values
    deferred: int = 0  # op outputs whose rounding moved past a value-preserving consumer


def _float_tensor_names(proto) -> tuple[set[str], set[str]]:
    """(float32 tensor names, names of any known type), from the graph and ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is best effort; the graph's own annotations remain
        inferred = proto
    graph = inferred.graph
    float_names, known = set(), set()
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.HasField("tensor_type"):
            known.add(info.name)
            if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                float_names.add(info.name)
    for init in graph.initializer:
        known.add(init.name)
        if init.data_type == onnx.TensorProto.FLOAT:
            float_names.add(init.name)
    return float_names, known


def rewrite_fp16(proto):
    """A copy of ONNX model `proto` that computes as ATC's force_fp16 does (see the module docstring).

    Returns (new model, RewriteStats). Unknown-type tensors are left alone (never cast an integer
    shape tensor); an op output whose type ONNX cannot infer is reported as an error, since
    leaving it unrounded would make the preview silently partly float32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    stats = RewriteStats()
    float_names, known = _float_tensor_names(model)

    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            rounded = numpy_helper.from_array(round_fp16(numpy_helper.to_array(init)), init.name)
            graph.initializer[index].CopyFrom(rounded)
            stats.initializers += 1
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(round_fp16(numpy_helper.to_array(attr.t)), attr.t.name))
                    stats.initializers += 1
                    float_names.add(node.output[0])

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    initializer_names = {i.name for i in graph.initializer}
    exact = {name for name in float_names if name in initializer_names}

    def cast_pair(source: str, target: str) -> list:
        stats.cast_pairs += 1
        half = target + _SUFFIX + "_half"
        return [helper.make_node("Cast", [source], [half], to=TensorProto.FLOAT16, name=half),
                helper.make_node("Cast", [half], [target], to=TensorProto.FLOAT, name=target + _SUFFIX + "_back")]

    new_nodes = []
    for graph_input in graph.input:
        if graph_input.name in float_names and graph_input.name not in initializer_names:
            rounded = graph_input.name + _SUFFIX + "_input"
            new_nodes += cast_pair(graph_input.name, rounded)
            for node in consumers.get(graph_input.name, []):
                node.input[:] = [rounded if name == graph_input.name else name for name in node.input]
            exact.add(graph_input.name)
            exact.add(rounded)

    for node in graph.node:
        new_nodes.append(node)
        if node.op_type == "Constant":
            continue
        for position, output in enumerate(node.output):
            if not output:
                continue
            if output not in known:
                raise fail(f"FP16 preview: cannot tell the type of {node.op_type} output {output!r} "
                           f"(ONNX shape inference failed on this model)")
            if output not in float_names:
                continue
            float_inputs = [name for name in node.input if name in float_names]
            if node.op_type in _VALUE_PRESERVING and float_inputs and all(name in exact for name in float_inputs):
                exact.add(output)
                stats.exact_outputs += 1
                continue
            users = consumers.get(output, [])
            if (output not in graph_outputs and len(users) == 1 and users[0].op_type in _VALUE_PRESERVING
                    and sum(name in float_names for name in users[0].input) == 1):
                stats.deferred += 1  # the single consumer's output is rounded instead (module docstring)
                continue
            unrounded = output + _SUFFIX + "_f32"
            node.output[position] = unrounded
            new_nodes += cast_pair(unrounded, output)
            exact.add(output)
    del graph.node[:]
    graph.node.extend(new_nodes)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:  # pragma: no cover - would be a bug of the rewrite
        raise fail(f"FP16 preview: the rewritten model fails onnx.checker: {first_line(err)}") from None
    return model, stats


@functools.lru_cache(maxsize=1)
def check_casts_survive(threads: int | None = None) -> None:
    """Fail unless ONNX Runtime, with the backend's session options, really rounds through a Cast pair.

    A graph optimiser that folded Cast(FLOAT16)-Cast(FLOAT) into nothing would turn the preview
    into a float32 run without a word; this probe makes that an error instead.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Cast", ["r"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    probe.ir_version = 8  # what every ONNX Runtime of requirements.txt reads
    values = np.array([1.0 + 2.0 ** -12, 3.14159265, 1e-3 + 1e-9, 60000.5], dtype=np.float32)
    session = ort.InferenceSession(probe.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": values})[0]
    if not np.array_equal(got, round_fp16(values)):
        raise fail(f"ONNX Runtime {ort.__version__} does not round through Cast(FLOAT16)-Cast(FLOAT) with these "
                   f"session options (got {got.tolist()}); the FP16 preview would be float32", exit_code=1)


def preview_model_bytes(model_path: Path | str) -> tuple[bytes, RewriteStats]:
    """Read an ONNX file and return the serialized force_fp16 preview of it, with what the rewrite did."""
    import onnx

    try:
        proto = onnx.load(str(model_path))
    except Exception as err:  # noqa: BLE001 - protobuf/onnx raise several types for a file that is no model
        raise fail(f"cannot load ONNX model {model_path}: {first_line(err)}") from None
    rewritten, stats = rewrite_fp16(proto)
    return rewritten.SerializeToString(), stats


class Fp16PreviewBackend(OnnxRuntimeBackend):
    """The ONNX Runtime backend on the force_fp16 rewrite of the model (plain float32 for must_keep_origin_dtype)."""

    name = "onnxruntime-fp16"

    def __init__(self, model_path: Path | str, device: int = 0, threads: int | None = None,
                 precision_mode: str | None = DEFAULT_MODE) -> None:
        choice = resolve_precision_mode(precision_mode)
        self.precision = choice
        if choice.note:
            print(f"note: --precision_mode {choice.mode}: {choice.note}", file=sys.stderr)
        if choice.kind == FP32:
            super().__init__(model_path, device=device, threads=threads)
            self.name = "onnxruntime"
            self.device = f"{self.device}, float32 ({choice.mode})"
            return
        check_casts_survive(threads)
        data, self.rewrite = preview_model_bytes(model_path)
        # OnnxRuntimeBackend opens a file; the rewrite lives only as long as the session takes to load it
        with tempfile.TemporaryDirectory(prefix="fp16_preview_") as folder:
            path = Path(folder) / (Path(model_path).stem + "_fp16_preview.onnx")
            path.write_bytes(data)
            super().__init__(path, device=device, threads=threads)
        self.device = f"{self.device}, {choice.mode} preview"
