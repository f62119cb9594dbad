"""The eval transform equals torchvision's, bit for bit, on real and on awkward images (in-process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from repvgg_pipeline.transforms import (
    EvalTransform,
    default_resize,
    normalize_lut,
    preprocess_image,
    resized_size,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torchvision_reference(path: Path, transform: EvalTransform) -> np.ndarray:
    """What the published accuracy was measured with: pil_loader + Resize + CenterCrop + ToTensor + Normalize."""
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    return transform.torchvision()(img).numpy()


def assert_bit_exact(ours: np.ndarray, ref: np.ndarray, what: object) -> None:
    assert ours.dtype == np.float32 and ours.shape == ref.shape, (what, ours.shape, ref.shape)
    assert ours.tobytes() == ref.tobytes(), (what, float(np.abs(ours - ref).max()))


def test_lut_matches_torchvision_for_every_value():
    for mean, std in [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.25, 0.1), (0.3, 0.7, 0.05))]:
        pixels = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (1, 256, 3)).copy()
        ref = T.Normalize(mean, std)(T.ToTensor()(Image.fromarray(pixels))).numpy()[:, 0, :]
        lut = normalize_lut(mean, std)
        assert lut.dtype == np.float32 and lut.shape == (3, 256)
        assert lut.tobytes() == np.ascontiguousarray(ref).tobytes()


def test_resized_size_follows_torchvision():
    for w, h in [(500, 375), (375, 500), (2816, 2112), (227, 227), (256, 300), (999, 257), (7, 5)]:
        img = Image.new("RGB", (w, h))
        assert T.Resize(256)(img).size == resized_size(w, h, 256)
    assert default_resize(224) == 256 and default_resize(320) == 320


def test_fullsize_originals_bit_exact(shared_data):
    files = sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))
    assert len(files) == 20
    modes = set()
    transform = EvalTransform()
    lut = normalize_lut(transform.mean, transform.std)
    for path in files:
        modes.add(Image.open(path).mode)
        assert_bit_exact(preprocess_image(path, transform, lut), torchvision_reference(path, transform), path.name)
    assert "L" in modes  # the grayscale original is covered


@pytest.mark.parametrize("resize, crop", [(320, 320), (256, 320), (300, 160)])
def test_other_sizes_bit_exact(shared_data, resize, crop):
    """D2se/RepVGGplus at 320, a crop larger than the resize (torchvision zero-pads), a small crop."""
    files = sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[::4]
    transform = EvalTransform(resize=resize, crop=crop)
    for path in files:
        assert_bit_exact(preprocess_image(path, transform), torchvision_reference(path, transform), (path.name, crop))


@pytest.fixture(scope="module")
def awkward_images(tmp_path_factory, shared_data) -> list[Path]:
    """Odd sizes and every kind of mode Pillow reads, made from a real photo; names with spaces and unicode."""
    folder = tmp_path_factory.mktemp("awkward")
    photo = Image.open(sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[1]).convert("RGB")
    made = []

    def save(img: Image.Image, name: str, **kw) -> None:
        img.save(folder / name, **kw)
        made.append(folder / name)

    for w, h in [(257, 999), (999, 257), (256, 256), (256, 300), (300, 256), (224, 224), (225, 223), (7, 5)]:
        save(photo.resize((w, h)), f"size {w}x{h}.png")
    save(photo.convert("CMYK"), "cmyk ünïcødé 画像.jpg", quality=90)
    save(photo.convert("L"), "gray.jpg", quality=90)
    save(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "palette.png", transparency=3)
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    save(rgba, "alpha.png")
    save(photo.convert("LA"), "la.png")
    deep = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save(Image.fromarray(deep), "sixteen bit.png")
    save(photo, "photo.webp", quality=90)
    save(photo.resize((300, 200)), "photo.bmp")
    save(photo.resize((300, 200)), "photo.tiff")
    return made


def test_awkward_images_bit_exact(awkward_images):
    modes = {Image.open(p).mode for p in awkward_images}
    assert {"CMYK", "L", "P", "RGBA", "LA"} <= modes and any(m.startswith("I") for m in modes), modes
    transform = EvalTransform()
    for path in awkward_images:
        assert_bit_exact(preprocess_image(path, transform), torchvision_reference(path, transform), path.name)


def test_uint8_equals_float32_after_host_normalisation(shared_data):
    """The uint8 HWC crop, normalised on the host the torchvision way, is the float32 tensor, bit for bit."""
    transform = EvalTransform()
    for path in sorted((shared_data / "imagenet_val_fullsize20").glob("*.JPEG"))[::5]:
        pixels = preprocess_image(path, transform, dtype="uint8")
        assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3)
        on_host = T.Normalize(transform.mean, transform.std)(torch.from_numpy(pixels.copy()).permute(2, 0, 1)
                                                             .to(torch.float32).div(255)).numpy()
        assert_bit_exact(preprocess_image(path, transform), on_host, path.name)
        # AIPP (ASCEND_FORMATS.md §2) computes (x - 255*mean) * 1/(255*std): the same up to float rounding
        aipp = (pixels.transpose(2, 0, 1).astype(np.float64) - 255 * np.array(transform.mean)[:, None, None]) \
            / (255 * np.array(transform.std)[:, None, None])
        assert np.abs(aipp - on_host).max() < 1e-5
