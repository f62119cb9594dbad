"""Deterministic random RepVGG checkpoints for demos and tests (the real weights cannot be downloaded here).

A plain `torch.randn` network is useless for testing fusion: BatchNorm with the default
statistics (mean 0, var 1, gamma 1, beta 0) is almost the identity, so a fusion bug in the BN
folding would go unnoticed, and activations grow or vanish over 20+ layers so that every
image gets the same class. Instead:

- BN gamma/beta are drawn at random, and running mean/var are *measured*: one forward pass
  in training mode over a fixed batch of smooth random images (drawn from the seed) sets
  every BN's running statistics to that batch's statistics. Each layer's output is then
  normalised by real, non-trivial statistics and activations stay in a sane range at any depth;
- the classifier is standardised on the pooled features of that batch, so logits are spread
  out and different images get different top-1 classes;
- SE gates get small weights (SE_WEIGHT_SCALE) and random biases: with full-size random
  weights the 48 SE gates of D2se / RepVGGplus make the eval-mode network chaotic, so that
  float32 rounding alone changes the logits and no export could be verified.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from repvgg_model.checkpoint import FAMILIES, MMPRETRAIN, from_official_keys
from repvgg_model.errors import ModelError
from repvgg_model.model import RepVGGplus, create_model, fuse_model

SE_WEIGHT_SCALE = 0.01  # random SE gates with full-size weights make a deep net chaotic in eval mode
LAYOUTS = tuple(f"{family}{form}" for family in FAMILIES for form in ("", "-fused"))


def calibration_images(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """Smooth random images in the value range of ImageNet-normalised inputs (about -2..2.5).

    Coarse colour blobs plus finer texture: closer to photographs than white noise, so the
    measured statistics also suit real images.
    """
    coarse = torch.randn(count, 3, 4, 4, generator=generator)
    medium = torch.randn(count, 3, 16, 16, generator=generator) * 0.5
    fine = torch.randn(count, 3, size, size, generator=generator) * 0.1
    images = (F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
              + F.interpolate(medium, size=(size, size), mode="bilinear", align_corners=False) + fine)
    return images.clamp(-2.1, 2.6)


@torch.no_grad()
def randomize_model(model: nn.Module, seed: int = 0, calibration_batch: int = 8, calibration_size: int = 224,
                    calibration_inputs: torch.Tensor | None = None, spread_logits: bool = True) -> nn.Module:
    """Give a train-time `model` random weights with measured, non-trivial BN statistics (in place).

    Calibrating at the deployment resolution (224) spreads real images' top-1 classes best
    (about a third of 100 real images get distinct classes, against a seventh at 64).
    A random deep network is sensitive to inputs unlike its calibration batch (activations can
    grow layer after layer in eval mode), so tests that compare outputs on small inputs pass
    those very inputs as `calibration_inputs`: the BN statistics are then exactly theirs.
    `spread_logits=False` keeps the plain random classifier (no standardisation on the
    calibration batch, which divides by small feature spreads and so magnifies float rounding).
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    batchnorms = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            if module.bias is None:
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / fan_in)))
            else:  # the SE convs (the only ones with a bias): mild gates, see SE_WEIGHT_SCALE
                module.weight.copy_(normal(module.weight.shape, SE_WEIGHT_SCALE * math.sqrt(2.0 / fan_in)))
                module.bias.copy_(normal(module.bias.shape, 0.5))
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(uniform(module.weight.shape, 0.4, 1.0))
            module.bias.copy_(normal(module.bias.shape, 0.2))
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, running stats == that batch's
            batchnorms.append(module)
        elif isinstance(module, nn.Linear):
            module.weight.copy_(normal(module.weight.shape, 1.0 / math.sqrt(module.in_features)))
            module.bias.zero_()
    images = calibration_inputs if calibration_inputs is not None else calibration_images(
        generator, calibration_batch, calibration_size)
    model.train()
    if isinstance(model, RepVGGplus):
        model.forward_train(images)
    else:
        model(images)
    for bn in batchnorms:
        bn.momentum = 0.1
        # A channel that is (almost) constant on the calibration batch, e.g. a ReLU-dead input of an
        # identity branch, would get a variance near 0 and a gain near gamma/sqrt(eps) = 300x:
        # any other input would then blow up. Floor it at a tenth of the layer's typical variance.
        floor = 0.1 * float(bn.running_var.median()) + 1e-4
        bn.running_var.clamp_(min=floor)
    model.eval()
    if spread_logits:
        _standardise_classifier(model, images)
    return model


def _pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = model.linear.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


def _standardise_classifier(model: nn.Module, images: torch.Tensor) -> None:
    """Scale and shift `linear` so logits on the calibration batch are about N(0, 1) per class."""
    features = _pooled_features(model, images)
    mean, std = features.mean(0), features.std(0)
    std = std.clamp(min=0.1 * float(std.median()) + 1e-4)  # near-constant features must not get huge weights
    weight = model.linear.weight / std
    model.linear.weight.copy_(weight)
    model.linear.bias.copy_(-(weight @ mean))


def random_state_dict(arch: str = "RepVGG-A0", num_classes: int = 1000, seed: int = 0, layout: str = "official",
                      calibration_size: int = 224) -> dict[str, torch.Tensor]:
    """The state_dict `write_random_checkpoint` saves, keyed for `layout` (see LAYOUTS)."""
    if layout not in LAYOUTS:
        raise ModelError(f"unknown checkpoint layout {layout!r}; known: {', '.join(LAYOUTS)}")
    model = randomize_model(create_model(arch, num_classes), seed, calibration_size=calibration_size)
    family, _, form = layout.partition("-")
    if form == "fused":
        model, _ = fuse_model(model, inplace=True)
    return from_official_keys(model.state_dict(), family)


def write_random_checkpoint(path: Path | str, arch: str = "RepVGG-A0", num_classes: int = 1000, seed: int = 0,
                            layout: str = "official") -> None:
    """Save a deterministic random checkpoint for `arch`, as the official training code would (atomically).

    `layout` "official" is the official train-time key format as a plain state_dict; the
    others ("official-fused", "timm", "timm-fused", "mmpretrain", "mmpretrain-fused") use
    those projects' key names, mmpretrain wrapped as {"state_dict": ..., "meta": ...}.
    """
    state_dict = random_state_dict(arch, num_classes, seed, layout)
    payload: object = state_dict
    if layout.startswith(MMPRETRAIN):
        payload = {"state_dict": state_dict, "meta": {"note": "random weights for testing"}}
    path = Path(path)
    # atomically (temporary file beside it, then rename), without the pipeline's atomic module:
    # the model library stands on its own
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
