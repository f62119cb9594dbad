"""The preprocessing step's options and per-image worker, shared by both ways images reach a model.

`preprocess.py` writes each image's tensor to a `.bin` file; `infer.py` streaming
(`repvgg_pipeline.sources.images`) hands the same arrays straight to the backend. Both
take the very same options (`--resize`, `--crop`, `--mean`, `--std`, `--dtype`,
`--workers`, `--shard`) and run the very same code per image in their worker processes,
so a streamed run and the two-step run compute bit-identical inputs by construction.
"""

from __future__ import annotations

import argparse
import math
import signal
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from repvgg_pipeline.cli import fail, first_line, usable_cores
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.formats.failures import write_failures  # noqa: F401 - the failure list of both paths
from repvgg_pipeline.transforms import PRESETS, TORCHVISION, EvalTransform, default_resize, preprocess_image

LABEL_FILE = "val_label.txt"  # written beside the tensors (preprocess.py) or the results (streaming) for class folders


def add_transform_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, crop_default: int | None = 224,
                            dtype_default: str | None = tensors.FLOAT32_CHW) -> None:
    """Add --resize --crop --mean --std --dtype --workers --shard to `parser` (or an argument group).

    `crop_default`/`dtype_default` None means 'the model's own' (infer.py, which knows the model).
    """
    crop_help = f"(default: {crop_default})" if crop_default else "(default: the model's input size)"
    parser.add_argument(
        "--preset", choices=PRESETS, default=TORCHVISION,
        help="whose evaluation transform to reproduce. torchvision (default): Resize(256) bilinear + CenterCrop(224) "
             "bit-identical to torchvision, the official RepVGG figures (A0: top-1 72.41). mindspore: the MindSpore "
             "model zoo's research/cv/repvgg eval.py / infer_onnx.py (shorter side 256 with Pillow's bicubic, centre "
             "crop 224, mean/std on 0-255 pixels), its published ONNX figures top-1 0.72024 / top-5 0.90394 (and "
             "eval.py's 72.938 / 90.902). mindspore-310: its Ascend 310 inference (ascend310_infer/src/main.cc: "
             "Resize((256, 256)) bicubic ignoring the aspect ratio, centre crop 224), published top-1 0.72242 / "
             "top-5 0.90734. --resize, --crop, --mean, --std still apply on top of a preset")
    parser.add_argument("--resize", type=int, default=None,
                        help="shorter side after resize (default: 256 for --crop 224, else the crop size; "
                             "int(256 / 224 * crop) with a mindspore preset)")
    parser.add_argument("--crop", type=int, default=crop_default, help=f"center crop size {crop_help}")
    parser.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation mean (default: ImageNet 0.485 0.456 0.406)")
    parser.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation std (default: ImageNet 0.229 0.224 0.225)")
    dtype_help = (f"(default {dtype_default})" if dtype_default else "(default: what the model takes)")
    parser.add_argument("--dtype", choices=tensors.LAYOUTS, default=dtype_default,
                        help="float32: normalised CHW tensor (602,112 bytes at 224); uint8: cropped RGB pixels, "
                             f"HWC, for an OM model with AIPP normalisation (150,528 bytes at 224) {dtype_help}"
                            )
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="parallel processes (default: all cores, here %(default)s)")
    parser.add_argument("--shard", default=None, metavar="i/n",
                        help="process only the i-th (0-based) of n deterministic shares, e.g. 0/4 ... 3/4")


def transform_from_options(crop: int, resize: int | None = None, mean: Sequence[float] | None = None,
                           std: Sequence[float] | None = None, preset: str = TORCHVISION) -> EvalTransform:
    """The eval transform of these options, checked: one-line `UserError` for a non-positive size, a mean that is
    not finite, a std that is not positive and finite, or a mean/std whose normalised values overflow float32."""
    if crop < 1:
        raise fail(f"--crop must be positive, got {crop}")
    resize = default_resize(crop, preset) if resize is None else resize
    if resize < 1:
        raise fail(f"--resize must be positive, got {resize}")
    base = EvalTransform()
    mean = tuple(mean) if mean is not None else base.mean
    std = tuple(std) if std is not None else base.std
    if not all(math.isfinite(m) for m in mean):
        raise fail(f"--mean must be finite numbers, got {' '.join(map(str, mean))}")
    if not all(math.isfinite(v) and v > 0 for v in std):
        raise fail(f"--std must be positive finite numbers, got {' '.join(map(str, std))}")
    transform = EvalTransform(resize=resize, crop=crop, mean=mean, std=std, preset=preset)
    with np.errstate(all="ignore"):  # the overflow is reported below, in one line
        lut = transform.lut()
    if not np.isfinite(lut).all():
        raise fail(f"--mean {' '.join(map(str, mean))} / --std {' '.join(map(str, std))}: "
                   "the normalised values overflow float32")
    return transform


def check_workers(workers: int) -> None:
    if workers < 1:
        raise fail(f"--workers must be at least 1, got {workers}")


# Worker state, set once per process by init_worker (also used in-process for one worker).
_STATE: dict = {}


def init_worker(transform: EvalTransform, dtype: str, ignore_sigint: bool) -> None:
    """Pool initializer: the transform, the output dtype and the normalisation table, built once per process."""
    if ignore_sigint:  # Ctrl-C is handled by the parent, which terminates the pool
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Images between Pillow's warning and error limits (89M-179M pixels) are processed like any
    # other; its two-line warning would break the one-line-per-problem output. Above, it fails.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    _STATE["transform"] = transform
    _STATE["dtype"] = dtype
    _STATE["lut"] = transform.lut()


def preprocess_one(source: str) -> tuple[np.ndarray | None, str | None]:
    """One image file to its input tensor in a worker: (array, None), or (None, one-line reason) when unreadable."""
    try:
        return preprocess_image(source, _STATE["transform"], _STATE["lut"], _STATE["dtype"]), None
    except Exception as err:  # noqa: BLE001 - any decoder error means: this image is unreadable
        return None, first_line(err, with_type=True)
