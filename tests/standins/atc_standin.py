"""Stand-in for CANN's `atc` (tests only): record the call, write an "OM" that the stand-in ais_bench can run.

The OM written is the ONNX model itself with the batch axis of the input and outputs
fixed to the batch in `--input_shape` (an OM is a static-shape model), and, when
`--insert_op_conf` names an AIPP config, its mean/scale values stored in the model's
metadata under `standin_aipp` so the stand-in InferSession can apply them to uint8 input.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path


def parse(argv: list[str]) -> dict[str, str]:
    options = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            sys.exit(f"ATC stand-in: unsupported argument {arg!r} (expected --name=value)")
        key, value = arg[2:].split("=", 1)
        options[key] = value
    return options


def read_aipp(path: Path) -> dict[str, float]:
    """The `key : value` pairs of an aipp_op block."""
    values = {}
    for key, value in re.findall(r"^\s*(\w+)\s*:\s*(\S+)\s*$", path.read_text(), flags=re.M):
        try:
            values[key] = float(value)
        except ValueError:
            values[key] = value
    return values


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("STANDIN_LOG"):
        with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(["atc", *argv]) + "\n")
    options = parse(argv)
    if os.environ.get("STANDIN_ATC_FAIL") == "1":
        print("ATC run failed, Please check the detail log, Try 'atc --help' for more information", file=sys.stderr)
        return 1
    for required in ("framework", "model", "output", "soc_version"):
        if required not in options:
            print(f"E10004: Argument [--{required}] is required", file=sys.stderr)
            return 1
    if os.environ.get("STANDIN_ATC_SKIP_OUTPUT") == "1":
        print("ATC run success, welcome to the next use.")
        return 0

    import onnx

    model = onnx.load(options["model"])
    name, dims = options["input_shape"].split(":", 1)
    shape = [int(d) for d in dims.split(",")]
    graph_input = next(i for i in model.graph.input if i.name == name)
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    for output in model.graph.output:
        first = output.type.tensor_type.shape.dim[0]
        first.ClearField("dim_param")
        first.dim_value = shape[0]
    if "insert_op_conf" in options:
        entry = model.metadata_props.add()
        entry.key, entry.value = "standin_aipp", json.dumps(read_aipp(Path(options["insert_op_conf"])))
    entry = model.metadata_props.add()
    entry.key, entry.value = "standin_soc_version", options["soc_version"]
    onnx.save(model, options["output"] + ".om")
    print("ATC run success, welcome to the next use.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
