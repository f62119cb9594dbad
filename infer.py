"""Run a RepVGG model over preprocessed `.bin` tensors and write ais_bench's output layout.

    python infer.py repvgg.onnx prep_bin/ result/ --output_dirname bs16 --batch-size 16
    python infer.py repvgg_bs16.om repvgg_prep_bin.info result/ --device 0      # on Ascend, via ais_bench
    python infer.py repvgg.onnx --loop 50 --batch-size 16                       # pure throughput, random input

`.onnx` runs on ONNX Runtime (CUDA when onnxruntime-gpu is installed, else CPU), `.om`
on an Ascend NPU through ais_bench's InferSession; the dumps and the
`{output_dirname}_summary.json` are the same either way, so postprocess.py and
parse_perf.py work unchanged (also on the output of the real `python3 -m ais_bench`).
Inputs must be float32 C,H,W tensors for an ONNX model; uint8 H,W,C tensors are for an
OM converted with AIPP (`scripts/atc_convert.sh --aipp`) and are refused for ONNX rather
than normalised on the host.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repvgg_pipeline.cli import fail, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these (slow) imports into one line
from repvgg_pipeline import runner
from repvgg_pipeline.backends.base import BACKENDS
from repvgg_pipeline.formats.dumps import OUTFMTS


def _input_size(text: str) -> tuple[int, int]:
    """`224` or `224,224` / `224x224` (height, width)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or H,W with positive numbers, got {text!r}")
    return values[0], values[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infer.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model file: .onnx (ONNX Runtime) or .om (ais_bench)")
    parser.add_argument("input", type=Path, nargs="?",
                        help="folder of .bin tensors or a gen_dataset_info.py .info file (omit with --loop)")
    parser.add_argument("output", type=Path, nargs="?",
                        help="output root: dumps go to OUTPUT/OUTPUT_DIRNAME/, the summary beside them")
    parser.add_argument("--output_dirname", "--output-dirname", dest="output_dirname",
                        help="dump folder name (default: the start time, %%Y_%%m_%%d-%%H_%%M_%%S, like ais_bench)")
    parser.add_argument("--outfmt", type=str.upper, choices=OUTFMTS, default="BIN", help="dump format (default BIN)")
    parser.add_argument("--batch-size", "--batchsize", dest="batch_size", type=int,
                        help=f"batch size (default: the model's own when static, else {runner.DEFAULT_BATCH_SIZE})")
    parser.add_argument("--backend", choices=BACKENDS, help="override the backend implied by the model suffix")
    parser.add_argument("--device", type=int, default=0, help="NPU id (ais_bench) or CUDA device (default 0)")
    parser.add_argument("--warmup", "--warmup_count", dest="warmup", type=int, default=1,
                        help="untimed warm-up runs before timing (default 1)")
    parser.add_argument("--loop", type=int, default=1,
                        help="runs per batch (default 1); without INPUT: timed runs on random data")
    parser.add_argument("--input-size", type=_input_size,
                        help="N or H,W: only for a model whose input height/width are not fixed")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all usable cores)")
    parser.add_argument("--resume", action="store_true",
                        help="keep complete dumps of an earlier run in the same folder and run only the rest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data of a --loop run")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.input is None and args.loop <= 1:
        raise fail("give INPUT (a folder of .bin files or an .info file), or --loop N for a pure throughput run")
    if args.input is not None and args.output is None:
        raise fail("give OUTPUT, the folder the dumps and the summary go to")
    if args.threads is not None and args.threads < 1:
        raise fail(f"--threads must be at least 1, got {args.threads}")
    if args.seed < 0:
        raise fail(f"--seed must be 0 or more, got {args.seed}")
    options = runner.RunOptions(
        model=args.model, inputs=args.input, output_root=args.output, output_dirname=args.output_dirname,
        outfmt=args.outfmt, batch_size=args.batch_size, backend=args.backend, device=args.device,
        warmup=args.warmup, loop=args.loop, input_size=args.input_size, threads=args.threads, resume=args.resume,
        seed=args.seed,
    )
    result = runner.run(options)
    print("\n".join(result.lines))
    print(runner.summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
