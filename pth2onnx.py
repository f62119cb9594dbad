"""Step 1 of the pipeline: a RepVGG checkpoint to a fused ONNX model for ATC, numerically verified.

    python pth2onnx.py RepVGG-A0-train.pth repvgg.onnx

Reads official (train-time or fused), timm and mmpretrain checkpoints (wrapped or not), infers
the variant from the tensor shapes, fuses every block into one 3x3 conv, exports with the
ModelZoo names (input `actual_input_1`, output `output1`, dynamic batch), checks the ops against
what ATC reads, and compares the ONNX model in ONNX Runtime with the original train-time PyTorch
model. The .onnx appears only once all of that passed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from repvgg_pipeline.atomic import atomic_path
from repvgg_pipeline.cli import EXIT_FAILED, fail, run_cli
from repvgg_pipeline.memory import shortfall

if TYPE_CHECKING:
    from repvgg_model.export import Verification

# torch, onnx and onnxruntime are imported inside main(), not here: importing them takes seconds,
# and a Ctrl-C then must end in run_cli's one line "interrupted", not a 40-line traceback.
DEFAULT_OPSET = 11  # repvgg_model.export.DEFAULT_OPSET; kept here so that --help needs no torch
MAX_INPUT_SIZE = 4096  # RepVGG is published at 224 and 320; 4096 already needs ~30 GiB of activations


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pth2onnx.py", description="RepVGG checkpoint -> fused, verified ONNX model for ATC.")
    parser.add_argument("checkpoint", type=Path, help="official / timm / mmpretrain .pth, train-time or fused, or a "
                        "MindSpore model zoo .ckpt / safetensors (recognised by content)")
    parser.add_argument("output", type=Path, help="the ONNX file to write")
    parser.add_argument("--arch", help="force the variant (e.g. RepVGG-A0, B1g4, D2se, L2pse); default: from shapes")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, help="static batch size (default: dynamic batch axis)")
    parser.add_argument("--input-size", type=positive_int,
                        help="input height and width (default: 224, 320 for D2se and RepVGGplus as published)")
    parser.add_argument("--no-fuse", action="store_true", help="export the train-time graph (for comparison)")
    parser.add_argument("--use-ema", action="store_true", help="take the EMA weights of the checkpoint")
    parser.add_argument("--skip-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    parser.add_argument("--verify-images", type=Path, metavar="DIR",
                        help="also compare on real images from DIR (published eval transform)")
    parser.add_argument("--verify-count", type=positive_int, default=32, metavar="N",
                        help="at most N images from --verify-images (default %(default)s)")
    parser.add_argument("--random-inputs", type=positive_int, default=4, metavar="N",
                        help="random inputs to compare on (default %(default)s)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="fail if max|diff| > TOLERANCE x max|logit| (default %(default)g)")
    parser.add_argument("--strict-ops", action="store_true",
                        help="fail (exit 1) when an op or the opset is outside what ATC reads")
    return parser


def report_verification(result: Verification, tolerance: float) -> bool:
    ok = result.passes(tolerance)
    agree = round(result.top1_agreement * result.count)
    print(f"verify ({result.source}): max|diff| {result.max_abs_diff:.3g} = {result.relative_diff:.2g} x max|logit| "
          f"{result.max_abs_logit:.3g} (tolerance {tolerance:g}): {'OK' if ok else 'FAILED'}; "
          f"top-1 agreement PyTorch vs ONNX Runtime {agree}/{result.count} ({100 * result.top1_agreement:.1f}%)")
    return ok


def _check_options(args: argparse.Namespace) -> None:
    """Options that cannot work, refused before the checkpoint is read."""
    if not math.isfinite(args.tolerance) or args.tolerance <= 0:
        raise fail(f"--tolerance must be a positive finite number, got {args.tolerance}")
    if args.input_size is not None and args.input_size > MAX_INPUT_SIZE:
        raise fail(f"--input-size {args.input_size}: at most {MAX_INPUT_SIZE} (RepVGG is published at 224 and 320)")
    size = args.input_size or 320
    verify_count = 0 if args.verify_images is None else args.verify_count
    largest_batch = max(args.batch_size or 1, args.random_inputs, verify_count)
    # inputs, and about 48 float32 feature maps of the input's size per image in the widest early layers
    problem = shortfall(largest_batch * 3 * size * size * 4 * (1 + 16))
    if problem:
        raise fail(f"--batch-size / --random-inputs / --verify-count {largest_batch} at input size {size}: {problem}")
    if args.verify_images is not None and not args.verify_images.is_dir():
        raise fail(f"--verify-images {args.verify_images}: not a folder")


def _prepare_output(output: Path, checkpoint: Path) -> None:
    """Prove the output can be written (folder made, temporary file created) before any work starts."""
    if output.is_dir():
        raise fail(f"{output}: is a folder; give the ONNX file name")
    if output.resolve() == checkpoint.resolve():
        raise fail(f"{output}: would overwrite the checkpoint")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{output.name}.probe-", dir=output.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise fail(f"cannot write {output}: {err.strerror or err}") from None


def main(args: argparse.Namespace) -> int:
    from repvgg_model.errors import ModelError

    started = time.perf_counter()
    _check_options(args)
    _prepare_output(args.output, args.checkpoint)
    try:
        return _convert(args, started)
    except ModelError as err:  # the model library's own error type: the same one line, its exit code
        raise fail(str(err), err.exit_code) from None
    except OSError as err:  # writing the ONNX file (disk full, folder gone) after the checks above
        raise fail(f"cannot write {args.output}: {err.strerror or err}") from None


def _convert(args: argparse.Namespace, started: float) -> int:
    from repvgg_model.checkpoint import load_checkpoint
    from repvgg_model.export import (
        INPUT_NAME,
        OUTPUT_NAME,
        atc_problems,
        export_onnx,
        model_opset,
        onnx_session,
        op_counts,
        random_inputs,
        verify_onnx,
    )
    from repvgg_model.model import fuse_model, repvgg_blocks
    from repvgg_model.official import identify_official
    from repvgg_pipeline.dataset import load_eval_batch

    loaded = load_checkpoint(args.checkpoint, arch=args.arch, use_ema=args.use_ema)
    variant = loaded.variant
    how = "forced by --arch" if args.arch else "recognised from tensor shapes"
    print(f"checkpoint: {args.checkpoint}")
    print(f"variant: {variant.name} ({how}), {loaded.num_classes} classes")
    stripped = f", stripped prefix {''.join(loaded.prefixes)}" if loaded.prefixes else ""
    print(f"format: {loaded.layout} keys ({loaded.wrapper}{stripped})")
    official = identify_official(args.checkpoint)
    if official is not None:
        print(f"official release: {official.file_name} (sha256 {official.sha256[:12]}...), "
              f"published top-1 {official.top1}, top-5 {official.top5}")
    else:
        print("official release: no (sha256 not in the table of official checkpoints)")

    reference = loaded.model
    if args.no_fuse:
        exported, fused = reference, 0
        print(f"fusion: skipped (--no-fuse), {len(repvgg_blocks(reference))} blocks exported in train-time form")
    elif loaded.fused:
        exported, fused = reference, 0
        print(f"fusion: the checkpoint is already fused ({len(repvgg_blocks(reference))} blocks)")
    else:
        exported, fused = fuse_model(reference)
        print(f"fusion: {fused} blocks fused into one 3x3 conv each")

    input_size = args.input_size or variant.input_size
    with atomic_path(args.output, suffix=".onnx") as tmp:
        proto = export_onnx(exported, tmp, input_size, args.batch_size, args.opset)
        batch = args.batch_size or "-1 (dynamic)"
        counts = op_counts(proto)
        print(f"onnx: opset {model_opset(proto)}, input {INPUT_NAME} [{batch}, 3, {input_size}, {input_size}], "
              f"output {OUTPUT_NAME} [{batch}, {loaded.num_classes}] (raw logits), onnx.checker OK")
        print("ops: " + ", ".join(f"{op} x{n}" for op, n in counts.most_common()))
        problems = atc_problems(proto)
        print("ATC check: " + ("; ".join(problems) if problems else f"all ops in the ATC list at opset {args.opset}"))
        if problems and args.strict_ops:
            raise fail(f"--strict-ops: {'; '.join(problems)}", EXIT_FAILED)

        if args.skip_verify:
            print("verify: skipped (--skip-verify)")
        else:
            session = onnx_session(tmp)
            batches = [(random_inputs(args.random_inputs, input_size), f"{args.random_inputs} random inputs")]
            if args.verify_images is not None:
                images, skipped = load_eval_batch(args.verify_images, input_size, args.verify_count)
                note = f", {skipped} unreadable skipped" if skipped else ""
                batches.append((images, f"{len(images)} images from {args.verify_images}{note}"))
            failed = []
            for inputs, source in batches:
                result = verify_onnx(reference, session, inputs, source, args.batch_size)
                if not report_verification(result, args.tolerance):
                    failed.append(f"{source}: max|diff| {result.max_abs_diff:.3g} > {args.tolerance:g} x max|logit| "
                                  f"{result.max_abs_logit:.3g}")
            if failed:
                raise fail("verification failed, no ONNX written: " + "; ".join(failed), EXIT_FAILED)

    size_mb = args.output.stat().st_size / 1e6
    print(f"pth2onnx: wrote {args.output} ({size_mb:.1f} MB, {variant.name}, {fused} blocks fused, "
          f"{sum(counts.values())} nodes) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(get_args_parser, main))
