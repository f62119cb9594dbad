"""ONNX export for ATC, the ATC operator check, and numerical proof against PyTorch.

The exported graph follows the Ascend ModelZoo conventions the ATC script relies on: input
`actual_input_1`, output `output1` (raw logits), opset 11, dynamic batch axis unless a static
batch size is asked for. The legacy TorchScript exporter (`dynamo=False`) is used: it emits a
plain opset-11 graph (torch's dynamo exporter needs onnxscript and targets newer opsets).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from repvgg_model.errors import ModelError, condense

INPUT_NAME = "actual_input_1"
OUTPUT_NAME = "output1"
DEFAULT_OPSET = 11
ATC_OPSETS = range(9, 19)  # CANN 5.x/6.x read opsets 9-13, CANN 7.x 9-18 (ASCEND_FORMATS.md section 2)
ATC_OPSETS_ALL_VERSIONS = range(9, 14)

# ONNX ops of CNN classifiers that the CANN ONNX operator specification lists for opsets 9-13.
# Deliberately a conservative subset: an op outside it is reported so that someone checks the
# CANN operator list of the installed version, not because ATC certainly rejects it.
ATC_SUPPORTED_OPS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "Div", "Dropout", "Exp", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool",
    "HardSigmoid", "Identity", "LeakyRelu", "Log", "MatMul", "MaxPool", "Mul", "Neg", "Pad", "Pow", "PRelu",
    "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax",
    "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
})


def export_onnx(model: nn.Module, path: Path | str, input_size: int = 224, batch_size: int | None = None,
                opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export `model` (eval mode, float32) to `path` and return the checked ONNX model.

    `batch_size=None` gives a dynamic batch axis (ModelZoo's `{0: "-1"}`), an int a static one.
    `path` is written directly: callers that publish the file write to a temporary name and
    rename it only after verification. The exporter writes into memory and this function writes
    the file, so a full disk or an unwritable path is one `ModelError`, not an error deep in torch.
    """
    if not 7 <= opset <= 20:
        raise ModelError(f"--opset {opset}: the exporter writes opsets 7-20, and ATC reads 9-13 (CANN 7: 9-18)")
    model = model.eval().float()
    example = torch.randn(batch_size or 1, 3, input_size, input_size)
    dynamic_axes = None if batch_size else {INPUT_NAME: {0: "-1"}, OUTPUT_NAME: {0: "-1"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices are not for the user
        buffer = io.BytesIO()
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    del buffer
    _drop_initializer_identities(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:  # pragma: no cover - would be an exporter bug
        raise ModelError(f"the exported ONNX model fails onnx.checker: {condense(err)}") from None
    try:
        with open(path, "wb") as out:
            out.write(proto.SerializeToString())
    except OSError as err:
        raise ModelError(f"cannot write {path}: {err.strerror or err}") from None
    return proto


def _drop_initializer_identities(proto: onnx.ModelProto) -> int:
    """Remove the `Identity` nodes the exporter adds when two weights are bit-identical (it shares one).

    Consumers read the shared initializer directly, so the graph holds only the ops of the
    network (Identity is harmless for ATC, but it hides what the graph is). Returns how many.
    """
    initializers = {t.name for t in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    alias = {n.output[0]: n.input[0] for n in proto.graph.node
             if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs}
    if not alias:
        return 0
    kept = [n for n in proto.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        node.input[:] = [alias.get(name, name) for name in node.input]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return len(alias)


def op_counts(proto: onnx.ModelProto) -> Counter[str]:
    """How often each op type occurs in the main graph."""
    return Counter(node.op_type for node in proto.graph.node)


def model_opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def atc_problems(proto: onnx.ModelProto) -> list[str]:
    """What in the graph may keep ATC from converting it (an empty list when nothing)."""
    problems = []
    opset = model_opset(proto)
    if opset not in ATC_OPSETS:
        problems.append(f"opset {opset} is outside what ATC reads (9-13; 9-18 with CANN 7)")
    elif opset not in ATC_OPSETS_ALL_VERSIONS:
        problems.append(f"opset {opset} needs CANN 7 or newer (CANN 5/6 read 9-13)")
    unknown = sorted(set(op_counts(proto)) - ATC_SUPPORTED_OPS)
    if unknown:
        problems.append("ops not in the ATC list: " + ", ".join(unknown))
    return problems


def onnx_session(path: Path | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Verification:
    """PyTorch vs ONNX Runtime on the same inputs."""

    count: int
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float  # fraction of inputs with the same arg-max
    source: str  # what the inputs were

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_logit, 1e-12)

    def passes(self, tolerance: float) -> bool:
        return self.max_abs_diff <= tolerance * self.max_abs_logit


def random_inputs(count: int, input_size: int, seed: int = 0) -> np.ndarray:
    """Normal random images (float32 NCHW), reproducible for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, input_size, input_size, generator=generator).numpy()


@torch.no_grad()
def verify_onnx(reference: nn.Module, session: ort.InferenceSession, inputs: np.ndarray, source: str,
                batch_size: int | None = None) -> Verification:
    """Run both on `inputs` (static-batch models get chunks of exactly `batch_size`, the last padded)."""
    reference = reference.eval()
    chunk = batch_size or len(inputs)
    expected, actual = [], []
    for start in range(0, len(inputs), chunk):
        batch = inputs[start:start + chunk]
        real = len(batch)
        if batch_size and real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), batch.dtype)])
        expected.append(reference(torch.from_numpy(batch)).numpy()[:real])
        actual.append(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0][:real])
    want, got = np.concatenate(expected), np.concatenate(actual)
    if not np.isfinite(want).all():
        raise ModelError(f"the PyTorch model itself gives non-finite logits (NaN or inf) on {source}: "
                         "its weights overflow float32, nothing to compare the export with")
    return Verification(
        count=len(want),
        max_abs_diff=float(np.abs(want.astype(np.float64) - got).max()),
        max_abs_logit=float(np.abs(want).max()),
        top1_agreement=float((want.argmax(1) == got.argmax(1)).mean()),
        source=source,
    )
