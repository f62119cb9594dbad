"""The evaluation transform of the published RepVGG accuracies, bit for bit, without torch.

torchvision's eval transform on a PIL image is
`Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)`:

- Resize(256) computes the new size as `short = 256, long = int(256 * long / short)` and calls
  `PIL.Image.resize(size, BILINEAR)` (no `reducing_gap`), or returns the image untouched when it
  already has that size;
- CenterCrop pads with zeros when the image is smaller than the crop, then crops at
  `int(round((h - 224) / 2.0))`, `int(round((w - 224) / 2.0))` (Python's round: halves to even);
- ToTensor turns uint8 into float32 and divides by 255 in float32; Normalize subtracts the
  float32 mean and divides by the float32 std.

Everything after the crop maps one uint8 value of one channel to one float32 value, so a
256-entry float32 table per channel, built with the very same float32 operations, reproduces
it exactly with one gather per channel (`normalize_lut`), and the table is built once per run.

Shortcuts that were measured and rejected because they change pixels: `Image.draft` (JPEG DCT
scaling); `Image.resize(box=...)` over the crop region only (its float32 box coordinates shift
the filter centres: 271 of 300 real images differed); running Pillow's two resize passes one by
one with the crop between them (with Pillow 13 one `resize` call equals vertical-then-horizontal
for some sizes, 25 of 300 random ones, so no fixed order reproduces it). The resize is therefore
the very call torchvision makes.

Presets for the MindSpore model zoo's RepVGG (`research/cv/repvgg` in mindspore-ai/models), so its
published figures can be reproduced (`EvalTransform.preset`):

- "mindspore": `src/data/imagenet.py` eval branch, used by `eval.py` and `infer_onnx.py`:
  `Decode() -> Resize(256, Inter.PILCUBIC) -> CenterCrop(224) -> Normalize(mean*255, std*255) -> HWC2CHW`;
- "mindspore-310": `ascend310_infer/src/main.cc`: the same with `Resize({256, 256}, kCubicPil)`,
  which ignores the aspect ratio.

What MindSpore's C++ kernels do (mindspore-ai/mindspore, `minddata/dataset/kernels/image/`), and how
it is reproduced here:

- Decode (`image_utils.cc` `Decode`): JPEGs go through libjpeg(-turbo) directly (`JpegCropAndDecode`,
  default ISLOW DCT, grayscale expanded to RGB; CMYK converted by its own integer formula, reproduced
  in `_mindspore_rgb`), anything else through OpenCV's `imdecode(IMREAD_COLOR)` + BGR2RGB. Here
  Pillow decodes (the same libjpeg-turbo decoder and settings for JPEG).
- Resize with `Inter.PILCUBIC` is not OpenCV: `resize_cubic_op.cc` is a port of Pillow's
  `ImagingResample` bicubic (a = -0.5, support 2, coefficients in double, 22-bit fixed point),
  always horizontal pass first, then vertical. Pillow >= 11 may run the vertical pass first in one
  `resize` call, so the two passes are run as two single-axis Pillow calls, in MindSpore's order.
- Resize(int): shorter side = size, the other `lround(float(long) / short * size)` in float32
  (`resize_op.cc`; torchvision truncates instead).
- CenterCrop (`center_crop_op.cc`): offset `(size - crop) / 2` in integer division (torchvision rounds);
  zero padding, the odd pixel on the top / left, when the image is smaller than the crop.
- Normalize (`Normalize` in `image_utils.cc`, MindSpore 2.x): `(float32(pixel) - mean[c]) / std[c]`
  in float32, with mean and std the float32 of the Python doubles `0.485 * 255`, ... (MindSpore 1.x
  computed `pixel / std - mean / std`, which differs in the last bit for some values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION, MINDSPORE, MINDSPORE_310 = "torchvision", "mindspore", "mindspore-310"
PRESETS = (TORCHVISION, MINDSPORE, MINDSPORE_310)


@dataclass(frozen=True)
class EvalTransform:
    """Parameters of the eval transform: Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    preset: str = TORCHVISION  # whose arithmetic: torchvision (default), mindspore, mindspore-310

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")

    def lut(self) -> np.ndarray:
        """The (3, 256) float32 table of this transform's ToTensor + Normalize (`to_float32_chw`)."""
        if self.preset == TORCHVISION:
            return normalize_lut(self.mean, self.std)
        return mindspore_normalize_lut(self.mean, self.std)

    def torchvision(self):
        """The equivalent torchvision transform (the reference the tests compare against)."""
        from torchvision import transforms

        return transforms.Compose([
            transforms.Resize(self.resize),
            transforms.CenterCrop(self.crop),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(self.mean), std=list(self.std)),
        ])


def default_resize(crop: int, preset: str = TORCHVISION) -> int:
    """The resize the evaluation of `preset` pairs with a crop.

    The official `get_default_val_trans` uses Resize(256)+CenterCrop(224) at 224 and
    Resize(r)+CenterCrop(r) at any other resolution r (D2se and RepVGGplus at 320); the MindSpore
    model zoo's `create_dataset_imagenet` uses `int(256 / 224 * image_size)`.
    """
    if preset != TORCHVISION:
        return int(256 / 224 * crop)
    return 256 if crop == 224 else crop


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(shorter) on a PIL image of this size."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of torchvision's CenterCrop(crop) in an image of this size (no padding case)."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def load_rgb(path) -> Image.Image:
    """Open and decode an image as RGB, like torchvision's `pil_loader` (`Image.open(f).convert("RGB")`).

    An RGB image is used as decoded (convert would only copy it); any other mode (L, CMYK, P,
    RGBA, I;16, ...) goes through Pillow's own `convert("RGB")`, as in the reference.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode == "RGB":
            return img
        return img.convert("RGB")


def resize_and_center_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """torchvision's Resize(resize) + CenterCrop(crop) on an RGB PIL image, pixel for pixel."""
    width, height = img.size
    new_w, new_h = resized_size(width, height, resize)
    if new_w < crop or new_h < crop:
        return _resize_then_pad_crop(img, new_w, new_h, crop)
    if (new_w, new_h) != (width, height):  # torchvision returns the image untouched at the target size
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = center_crop_offsets(new_w, new_h, crop)
    return img.crop((left, top, left + crop, top + crop))


def _resize_then_pad_crop(img: Image.Image, new_w: int, new_h: int, crop: int) -> Image.Image:
    """The rare path where the resized image is smaller than the crop: torchvision pads with zeros first."""
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    pad_left = (crop - new_w) // 2 if crop > new_w else 0
    pad_top = (crop - new_h) // 2 if crop > new_h else 0
    pad_right = (crop - new_w + 1) // 2 if crop > new_w else 0
    pad_bottom = (crop - new_h + 1) // 2 if crop > new_h else 0
    canvas = Image.new("RGB", (new_w + pad_left + pad_right, new_h + pad_top + pad_bottom), 0)
    canvas.paste(img, (pad_left, pad_top))
    left, top = center_crop_offsets(canvas.width, canvas.height, crop)
    return canvas.crop((left, top, left + crop, top + crop))


def normalize_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32 table: entry [c, v] is ToTensor + Normalize of uint8 value v in channel c.

    Built with the same float32 operations in the same order as torchvision
    (`float32(v) / 255`, then `- float32(mean)`, then `/ float32(std)`), each correctly rounded
    by IEEE 754, so the table holds exactly the values torchvision computes.
    """
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return np.ascontiguousarray((values[None, :] - mean32) / std32, dtype=np.float32)


def to_float32_chw(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map uint8 (H, W, C) pixels through the per-channel table into a float32 (C, H, W) tensor."""
    planes = pixels.transpose(2, 0, 1)
    out = np.empty(planes.shape, dtype=np.float32)
    for channel in range(planes.shape[0]):
        np.take(lut[channel], planes[channel], out=out[channel])
    return out


def preprocess_image(path, transform: EvalTransform, lut: np.ndarray | None = None,
                     dtype: str = "float32") -> np.ndarray:
    """One image file to its input tensor: float32 (C, H, W) normalised, or the uint8 (H, W, C) crop.

    `lut` is `transform.lut()`; pass it in to build it once per run.
    """
    if transform.preset == TORCHVISION:
        pixels = np.asarray(resize_and_center_crop(load_rgb(path), transform.resize, transform.crop))
    else:
        pixels = mindspore_pixels(path, transform)
    if dtype == "uint8":
        return pixels
    if lut is None:
        lut = transform.lut()
    return to_float32_chw(pixels, lut)


# --- MindSpore model zoo presets (see the module docstring for the sources) ------------------------------
def mindspore_resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after MindSpore's `Resize(shorter)`: float32 ratio, rounded half away from zero."""
    f32 = np.float32
    if height < width:
        return int(np.floor(float(f32(width) / f32(height) * f32(shorter)) + 0.5)), shorter
    return shorter, int(np.floor(float(f32(height) / f32(width) * f32(shorter)) + 0.5))


def mindspore_center_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    """MindSpore's CenterCrop on (H, W, 3) uint8: zero padding (odd pixel on top / left), integer-halved offsets."""
    height, width = pixels.shape[:2]
    pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((pad_h - pad_h // 2, pad_h // 2), (pad_w - pad_w // 2, pad_w // 2), (0, 0)))
        height, width = pixels.shape[:2]
    top, left = (height - crop) // 2, (width - crop) // 2
    return np.ascontiguousarray(pixels[top:top + crop, left:left + crop])


def pil_cubic_resize(img: Image.Image, width: int, height: int) -> Image.Image:
    """MindSpore's `Inter.PILCUBIC`: Pillow's bicubic, horizontal pass first, then vertical (two single-axis calls)."""
    if img.width != width:
        img = img.resize((width, img.height), Image.Resampling.BICUBIC)
    if img.height != height:
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    return img


def _mindspore_rgb(path) -> Image.Image:
    """Decode like MindSpore's `Decode`: RGB; CMYK JPEGs by its own integer formula on libjpeg's raw values.

    `JpegReadScanlines` (image_utils.cc): with an Adobe marker `r = k * c / 255`, else
    `r = (255 - c) * (255 - k) / 255`, in C integer division. Pillow hands out CMYK JPEG samples
    inverted whatever the marker ("CMYK;I", "assume adobe conventions"), i.e. 255 - raw.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode != "CMYK" or img.format != "JPEG":
            return img if img.mode == "RGB" else img.convert("RGB")
        raw = 255 - np.asarray(img).astype(np.int32)  # libjpeg's samples
        adobe = "adobe" in img.info
    ink, black = (raw[..., :3], raw[..., 3:]) if adobe else (255 - raw[..., :3], 255 - raw[..., 3:])
    rgb = ink * black // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def mindspore_pixels(path, transform: EvalTransform) -> np.ndarray:
    """Decode, resize and centre-crop as the MindSpore preset of `transform` does: uint8 (crop, crop, 3)."""
    img = _mindspore_rgb(path)
    if transform.preset == MINDSPORE_310:
        size = (transform.resize, transform.resize)
    else:
        size = mindspore_resized_size(img.width, img.height, transform.resize)
    return mindspore_center_crop(np.asarray(pil_cubic_resize(img, *size)), transform.crop)


def mindspore_normalize_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32 table of MindSpore's Normalize on 0-255 pixels: `(float32(v) - m) / s` in float32,
    m and s the float32 of the doubles `mean * 255`, `std * 255` (as `Normalize(mean=[0.485 * 255, ...])`)."""
    values = np.arange(256, dtype=np.float32)
    mean32 = np.asarray([m * 255 for m in mean], dtype=np.float32)[:, None]
    std32 = np.asarray([s * 255 for s in std], dtype=np.float32)[:, None]
    return np.ascontiguousarray((values[None, :] - mean32) / std32, dtype=np.float32)
