"""`--preset mindspore` / `mindspore-310`: MindSpore's C++ eval transform, reproduced bit for bit.

MindSpore itself is not installed, so the reference is an independent numpy port of what its kernels
do, written from the facts of mindspore-ai/mindspore `minddata/dataset/kernels/image/`:
`resize_op.cc` (output size), `resize_cubic_op.cc` (PILCUBIC: fixed-point bicubic, horizontal pass
then vertical), `center_crop_op.cc` (integer offsets, padding) and `image_utils.cc` `Normalize`
(`(float32(x) - mean) / std`). The implementation under test uses Pillow instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

import preprocess
from repvgg_pipeline.cli import run_cli
from repvgg_pipeline.formats import tensors
from repvgg_pipeline.transforms import (
    MINDSPORE,
    MINDSPORE_310,
    EvalTransform,
    load_rgb,
    mindspore_resized_size,
    preprocess_image,
)

PRECISION_BITS = 22  # resize_cubic_op.cc: "using 8 bits for result"


def _cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input index, int32 weights (out, kernel)) per output pixel, as `calc_coeff` + `normalize_coeff`."""
    scale = in_size / out_size
    interp_scale = max(scale, 1.0)
    support = 2.0 * interp_scale
    kernel = int(math.ceil(support)) * 2 + 1
    centers = (np.arange(out_size) + 0.5) * scale
    x_min = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    x_max = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - x_min
    taps = np.arange(kernel)
    weights = _cubic((taps[None, :] + x_min[:, None] - centers[:, None] + 0.5) / interp_scale)
    weights = np.where(taps[None, :] < x_max[:, None], weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(total != 0, weights / np.where(total == 0, 1, total), weights)
    fixed = np.where(weights < 0, -0.5 + weights * (1 << PRECISION_BITS), 0.5 + weights * (1 << PRECISION_BITS))
    return x_min, np.trunc(fixed).astype(np.int64)


def _resample_axis(pixels: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass of MindSpore's ResizeCubic along `axis` (1: horizontal, 0: vertical) of (H, W, 3) uint8."""
    moved = np.moveaxis(pixels, axis, 0).astype(np.int64)
    start, weights = _coefficients(moved.shape[0], out_size)
    index = np.minimum(start[:, None] + np.arange(weights.shape[1])[None, :], moved.shape[0] - 1)
    gathered = moved[index]  # (out, kernel, other, 3); taps past x_max carry weight 0
    acc = (1 << (PRECISION_BITS - 1)) + np.einsum("ok,okwc->owc", weights, gathered)
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def _reference(path, preset: str, resize: int = 256, crop: int = 224) -> np.ndarray:
    pixels = np.asarray(load_rgb(path))
    height, width = pixels.shape[:2]
    if preset == MINDSPORE_310:
        out_h = out_w = resize
    elif height < width:  # resize_op.cc: lround(static_cast<float>(long) / short * size)
        out_h, out_w = resize, int(np.floor(float(np.float32(width) / np.float32(height) * np.float32(resize)) + 0.5))
    else:
        out_w, out_h = resize, int(np.floor(float(np.float32(height) / np.float32(width) * np.float32(resize)) + 0.5))
    if out_w != width:
        pixels = _resample_axis(pixels, out_w, axis=1)
    if out_h != height:
        pixels = _resample_axis(pixels, out_h, axis=0)
    top_pad, left_pad = crop - pixels.shape[0], crop - pixels.shape[1]
    if top_pad > 0 or left_pad > 0:
        tp, lp = max(top_pad, 0), max(left_pad, 0)
        pixels = np.pad(pixels, ((tp // 2 + tp % 2, tp // 2), (lp // 2 + lp % 2, lp // 2), (0, 0)))
    y, x = (pixels.shape[0] - crop) // 2, (pixels.shape[1] - crop) // 2
    pixels = pixels[y:y + crop, x:x + crop]
    mean = np.float32([0.485 * 255, 0.456 * 255, 0.406 * 255])
    std = np.float32([0.229 * 255, 0.224 * 255, 0.225 * 255])
    return ((pixels.astype(np.float32) - mean) / std).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def images(shared_data) -> list:
    full = sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[:4]
    typical = sorted((shared_data / "imagenet_one_per_class").glob("*.JPEG"))[:6]
    gray = shared_data / "imagenet_one_per_class" / "n02096051_Airedale.JPEG"
    return full + typical + ([gray] if gray.exists() else [])


@pytest.mark.parametrize("preset", [MINDSPORE, MINDSPORE_310])
def test_preset_is_bit_exact_to_mindspores_kernels(images, preset):
    transform = EvalTransform(preset=preset)
    lut = transform.lut()
    for path in images:
        got = preprocess_image(path, transform, lut)
        assert got.dtype == np.float32 and got.shape == (3, 224, 224)
        assert np.array_equal(got, _reference(path, preset)), (path.name, preset)


def test_padding_and_other_sizes(images):
    path = images[0]
    for preset, resize, crop in ((MINDSPORE_310, 200, 224), (MINDSPORE, 180, 223), (MINDSPORE, 320, 320)):
        got = preprocess_image(path, EvalTransform(resize=resize, crop=crop, preset=preset))
        assert np.array_equal(got, _reference(path, preset, resize, crop)), (preset, resize, crop)


def test_presets_differ_where_they_should(images):
    """Not three names for one transform: bicubic vs bilinear, aspect ratio kept or not."""
    path = images[0]
    tv = preprocess_image(path, EvalTransform())
    ms = preprocess_image(path, EvalTransform(preset=MINDSPORE))
    ms310 = preprocess_image(path, EvalTransform(preset=MINDSPORE_310))
    assert not np.array_equal(tv, ms) and not np.array_equal(ms, ms310)
    assert np.abs(tv - ms).mean() < 0.1  # same crop of the same image, only the filter differs


def test_default_resize_follows_the_preset():
    from repvgg_pipeline.transforms import default_resize

    assert default_resize(224, MINDSPORE) == 256 and default_resize(320, MINDSPORE) == 365  # int(256/224*320)
    assert default_resize(320) == 320  # the official evaluation at 320: Resize(320) + CenterCrop(320)


def test_resize_rounds_where_torchvision_truncates():
    assert mindspore_resized_size(500, 375, 256) == (341, 256)  # 341.33
    assert mindspore_resized_size(333, 500, 256) == (256, 384)  # 384.38
    assert mindspore_resized_size(350, 500, 256) == (256, 366)  # 365.71: torchvision gives 365


def test_cmyk_jpeg_follows_mindspores_formula(tmp_path):
    rng = np.random.default_rng(0)
    cmyk = rng.integers(0, 256, (300, 400, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    with Image.open(path) as img:  # libjpeg writes an Adobe marker for CMYK; Pillow returns 255 - libjpeg's samples
        assert "adobe" in img.info
        raw = 255 - np.asarray(img).astype(np.int32)
    rgb = (raw[..., :3] * raw[..., 3:] // 255).astype(np.uint8)  # JpegReadScanlines, saw_Adobe_marker branch
    expected_path = tmp_path / "rgb.png"
    Image.fromarray(rgb, "RGB").save(expected_path)
    transform = EvalTransform(preset=MINDSPORE_310)
    assert np.array_equal(preprocess_image(path, transform, dtype="uint8"),
                          preprocess_image(expected_path, transform, dtype="uint8"))


def test_preprocess_cli_preset_and_settings_guard(images, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for path in images[:3]:
        (src / path.name).write_bytes(path.read_bytes())
    dst = tmp_path / "dst"
    argv = [str(src), str(dst), "--preset", "mindspore-310", "--workers", "1"]
    assert run_cli(preprocess.get_args_parser, preprocess.main, argv) == 0
    for path in images[:3]:
        written = tensors.read_tensor(dst / (path.stem + ".bin"), tensors.FLOAT32_CHW, 224, 224)
        assert np.array_equal(written, _reference(path, MINDSPORE_310))
    capsys.readouterr()
    # resuming into that folder with another preset would mix two transforms: refused
    assert run_cli(preprocess.get_args_parser, preprocess.main, [str(src), str(dst), "--workers", "1"]) == 2
    assert "preset mindspore-310 -> None" in capsys.readouterr().err


def test_help_names_the_published_figures(capsys):
    with pytest.raises(SystemExit):
        preprocess.get_args_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for figure in ("0.72024", "0.90394", "0.72242", "0.90734", "72.41"):
        assert figure in text
