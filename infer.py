"""Run a RepVGG model over preprocessed `.bin` tensors and write ais_bench's output layout.

    python infer.py repvgg.onnx prep_bin/ result/ --output_dirname bs16 --batch-size 16
    python infer.py repvgg_bs16.om repvgg_prep_bin.info result/ --device 0      # on Ascend, via ais_bench
    python infer.py repvgg.onnx --loop 50 --batch-size 16                       # pure throughput, random input
    python infer.py RepVGG-A0-train.pth prep_bin/ result/ --output_dirname torch  # PyTorch reference (train-time model)
    python infer.py repvgg.onnx prep_bin/ result/ --output_dirname fp16 --precision_mode force_fp16  # FP16 preview
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

from repvgg_pipeline.cli import EXIT_FAILED, fail, run_cli

# isort: split
# imported after repvgg_pipeline.cli, which turns a Ctrl-C during these (slow) imports into one line
from repvgg_pipeline import runner
from repvgg_pipeline.backends import BACKENDS, backend_for, open_backend
from repvgg_pipeline.formats.dumps import OUTFMTS
from repvgg_pipeline.preprocessing import add_transform_arguments
from repvgg_pipeline.sources.images import ImageStream, StreamOptions, looks_like_images
from repvgg_pipeline.transforms import TORCHVISION


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


def _str2bool(text: str) -> bool:
    """ais_bench's boolean values (`--display_all_summary True`), case-insensitive."""
    lowered = text.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or 1/0, yes/no), got {text!r}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infer.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?",
                        help="model file: .onnx (ONNX Runtime), .om (ais_bench), .pth/.pt/.tar checkpoint (PyTorch)")
    parser.add_argument("input", type=Path, nargs="?",
                        help="folder of .bin tensors or a gen_dataset_info.py .info file (omit with --loop)")
    parser.add_argument("output", type=Path, nargs="?",
                        help="output root: dumps go to OUTPUT/OUTPUT_DIRNAME/, the summary beside them")
    # ais_bench's spellings (`python3 -m ais_bench --model M --input I --output O ...`), same meaning
    parser.add_argument("--model", "-m", dest="model_opt", type=Path, help="same as MODEL (ais_bench spelling)")
    parser.add_argument("--input", "-i", dest="input_opt", type=Path, help="same as INPUT (ais_bench spelling)")
    parser.add_argument("--output", "-o", dest="output_opt", type=Path, help="same as OUTPUT (ais_bench spelling)")
    parser.add_argument("--display_all_summary", type=_str2bool, default=True, metavar="BOOL",
                        help="print the H2D/D2H latency lines too (default True; ais_bench's default is False)")
    parser.add_argument("--pure_data_type", choices=("zero", "random"), default="random",
                        help="data of a run without INPUT (default random)")
    parser.add_argument("--output_dirname", "--output-dirname", dest="output_dirname",
                        help="dump folder name (default: the start time, %%Y_%%m_%%d-%%H_%%M_%%S, like ais_bench)")
    parser.add_argument("--outfmt", type=str.upper, choices=OUTFMTS, default="BIN", help="dump format (default BIN)")
    parser.add_argument("--batch-size", "--batchsize", dest="batch_size", type=int,
                        help=f"batch size (default: the model's own when static, else {runner.DEFAULT_BATCH_SIZE})")
    parser.add_argument("--backend", choices=BACKENDS, help="override the backend implied by the model suffix")
    parser.add_argument("--device", "-d", type=int, default=0, help="NPU id (ais_bench) or CUDA device (default 0)")
    parser.add_argument("--warmup", "--warmup_count", dest="warmup", type=int, default=1,
                        help="untimed warm-up runs before timing (default 1)")
    parser.add_argument("--loop", "-l", type=int, default=1,
                        help="runs per batch (default 1); without INPUT: timed runs on random data")
    parser.add_argument("--input-size", type=_input_size,
                        help="N or H,W: only for a model whose input height/width are not fixed")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all usable cores)")
    parser.add_argument("--resume", action="store_true",
                        help="keep complete dumps of an earlier run in the same folder and run only the rest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data of a --loop run")
    # issue 10: the PyTorch reference and the FP16 preview
    parser.add_argument("--arch", help="torch backend: force the variant (as pth2onnx.py); default: from shapes")
    parser.add_argument("--use-ema", action="store_true", help="torch backend: take the EMA weights of the checkpoint")
    parser.add_argument("--precision_mode", "--precision-mode", dest="precision_mode", metavar="MODE",
                        help="ONNX model: preview ATC's --precision_mode (force_fp16: float16 data, float32 ops); "
                             "must_keep_origin_dtype or no flag: plain float32")
    stream = parser.add_argument_group("streaming (INPUT is a folder of images): preprocess.py's options")
    stream.add_argument("--stream", action="store_true",
                        help="INPUT is a folder of images (the default when it holds images and no .bin files)")
    add_transform_arguments(stream, crop_default=None, dtype_default=None)
    return parser


def _merge_named(args: argparse.Namespace) -> None:
    """Fold `--model/--input/--output` into the positional arguments; both forms at once must agree."""
    for name in ("model", "input", "output"):
        named = getattr(args, f"{name}_opt", None)
        if named is None:
            continue
        positional = getattr(args, name)
        if positional is not None and positional != named:
            raise fail(f"{name} given twice: {positional} and --{name} {named}")
        setattr(args, name, named)


def _backend_options(args: argparse.Namespace) -> tuple[str, dict] | None:
    """(backend name, its options) when the backend needs options the runner does not pass, else None."""
    name = backend_for(args.model, args.backend)
    if args.precision_mode is not None:
        from repvgg_pipeline.fp16_preview import FP32, resolve_precision_mode

        choice = resolve_precision_mode(args.precision_mode)
        if name == "ais_bench":
            raise fail("--precision_mode of an OM is fixed when ATC builds it: pass it to scripts/atc_convert.sh")
        if name == "torch":
            raise fail("--precision_mode previews an ONNX model; the torch backend is the float32 reference")
        if name == "onnxruntime" and choice.kind == FP32:
            return None  # plain float32, exactly the ONNX Runtime backend
        name = "onnxruntime-fp16"
    if name != "torch" and (args.arch or args.use_ema):
        raise fail("--arch and --use-ema apply to a training checkpoint (.pth/.pt/.tar, --backend torch)")
    if name == "torch":
        return name, {"arch": args.arch, "use_ema": args.use_ema, "input_size": args.input_size}
    if name == "onnxruntime-fp16":
        return name, {"precision_mode": args.precision_mode or "force_fp16"}
    return None


_STREAM_ONLY = ("crop", "resize", "mean", "std", "dtype", "shard")  # --preset: checked apart (it has a default)


def _image_stream(args: argparse.Namespace) -> ImageStream | None:
    """The streaming source when INPUT is (or `--stream` says it is) a folder of images, else None."""
    if args.input is None or not (args.stream or looks_like_images(args.input)):
        given = [f"--{name}" for name in _STREAM_ONLY if getattr(args, name) is not None]
        given += ["--preset"] if args.preset != TORCHVISION else []
        if given or args.stream:
            raise fail(f"{(given or ['--stream'])[0]} applies to a folder of images; give one as INPUT")
        return None
    options = StreamOptions(crop=args.crop, resize=args.resize, mean=args.mean and tuple(args.mean),
                            std=args.std and tuple(args.std), dtype=args.dtype, workers=args.workers, shard=args.shard,
                            preset=args.preset)
    return ImageStream(args.input, options, exclude=args.output)


def main(args: argparse.Namespace) -> int:
    _merge_named(args)
    if args.model is None:
        raise fail("give the model file (MODEL or --model)")
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
        seed=args.seed, pure_data_type=args.pure_data_type, display_all_summary=args.display_all_summary,
    )
    source = _image_stream(args)
    chosen = _backend_options(args)
    if chosen is None:
        result = runner.run(options, source=source)
    else:
        options.backend = chosen[0]
        backend = open_backend(args.model, chosen[0], args.device, args.threads, **chosen[1])
        try:
            result = runner.run(options, backend=backend, source=source)
        finally:
            backend.close()
    print("\n".join(result.lines))
    print(runner.summary_line(result))
    if result.failures:
        print(f"infer.py: {len(result.failures)} images could not be read, listed in {result.failures_file}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
