"""Run a RepVGG model over preprocessed `.bin` tensors and write ais_bench's output layout.

    python infer.py repvgg.onnx prep_bin/ result/ --output_dirname bs16 --batch-size 16
    python infer.py repvgg_bs16.om repvgg_prep_bin.info result/ --device 0      # on Ascend, via ais_bench
    python infer.py repvgg.onnx --loop 50 --batch-size 16                       # pure throughput, random input
    python infer.py repvgg.onnx /data/imagenet/val result/ --batch-size 16      # streaming: images, no .bin files

`.onnx` runs on ONNX Runtime (CUDA when onnxruntime-gpu is installed, else CPU), `.om`
on an Ascend NPU through ais_bench's InferSession; the dumps and the
`{output_dirname}_summary.json` are the same either way, so postprocess.py and
parse_perf.py work unchanged (also on the output of the real `python3 -m ais_bench`).
Inputs must be float32 C,H,W tensors for an ONNX model; uint8 H,W,C tensors are for an
OM converted with AIPP (`scripts/atc_convert.sh --aipp`) and are refused for ONNX rather
than normalised on the host.

Given a folder of images instead (flat or one subfolder per class; `--stream` to say so),
infer.py streams: preprocess.py's transform runs in worker processes and feeds the
backend directly, with preprocess.py's options (the crop and dtype default to what the
model takes). The dumps are byte for byte those of preprocess.py + infer.py, no tensor
file is written; `val_label.txt` (class folders) and `failed.txt` (unreadable images,
exit code 1) go to OUTPUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repvgg_pipeline import runner
from repvgg_pipeline.backends.base import BACKENDS
from repvgg_pipeline.cli import EXIT_FAILED, fail, run_cli
from repvgg_pipeline.formats.dumps import OUTFMTS
from repvgg_pipeline.preprocessing import add_transform_arguments
from repvgg_pipeline.sources.images import ImageStream, StreamOptions, looks_like_images


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
    stream = parser.add_argument_group("streaming (INPUT is a folder of images): preprocess.py's options")
    stream.add_argument("--stream", action="store_true",
                        help="INPUT is a folder of images (the default when it holds images and no .bin files)")
    add_transform_arguments(stream, crop_default=None, dtype_default=None)
    return parser


_STREAM_ONLY = ("crop", "resize", "mean", "std", "dtype", "shard")


def _image_stream(args: argparse.Namespace) -> ImageStream | None:
    """The streaming source when INPUT is (or `--stream` says it is) a folder of images, else None."""
    if args.input is None or not (args.stream or looks_like_images(args.input)):
        given = [f"--{name}" for name in _STREAM_ONLY if getattr(args, name) is not None]
        if given or args.stream:
            raise fail(f"{(given or ['--stream'])[0]} applies to a folder of images; give one as INPUT")
        return None
    options = StreamOptions(crop=args.crop, resize=args.resize, mean=args.mean and tuple(args.mean),
                            std=args.std and tuple(args.std), dtype=args.dtype, workers=args.workers, shard=args.shard)
    return ImageStream(args.input, options, exclude=args.output)


def main(args: argparse.Namespace) -> int:
    if args.input is None and args.loop <= 1:
        raise fail("give INPUT (a folder of .bin files or an .info file), or --loop N for a pure throughput run")
    if args.input is not None and args.output is None:
        raise fail("give OUTPUT, the folder the dumps and the summary go to")
    if args.threads is not None and args.threads < 1:
        raise fail(f"--threads must be at least 1, got {args.threads}")
    options = runner.RunOptions(
        model=args.model, inputs=args.input, output_root=args.output, output_dirname=args.output_dirname,
        outfmt=args.outfmt, batch_size=args.batch_size, backend=args.backend, device=args.device,
        warmup=args.warmup, loop=args.loop, input_size=args.input_size, threads=args.threads, resume=args.resume,
        seed=args.seed,
    )
    result = runner.run(options, source=_image_stream(args))
    print("\n".join(result.lines))
    print(runner.summary_line(result))
    if result.failures:
        print(f"infer.py: {len(result.failures)} images could not be read, listed in {result.failures_file}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
