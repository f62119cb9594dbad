"""The official RepVGG variants as data: one table instead of one factory function per variant.

Every variant is fully described by its stage depths, width multipliers, which layers are
grouped and whether (and where) it has squeeze-and-excitation blocks. Keeping that in one
declarative table lets the model builder, the checkpoint shape inference and the tests
iterate over the same facts (ASCEND_FORMATS.md section 8, the official repvgg.py /
repvggplus.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from repvgg_model.errors import ModelError

# Layers counted from 1 at the first block of stage 1 (the stem is layer 0); the official
# g2/g4 variants group every second one of them.
GROUPWISE_LAYERS = frozenset(range(2, 27, 2))

SE_BEFORE_RELU = "se"  # RepVGG-D2se: SE(C -> C//16) applied to the branch sum, then ReLU
SE_AFTER_RELU = "post_se"  # RepVGGplus-L2pse: ReLU, then SE(C -> C//4)


@dataclass(frozen=True)
class Variant:
    """One official RepVGG architecture."""

    name: str
    num_blocks: tuple[int, int, int, int]
    width: tuple[float, float, float, float]
    groups: int = 1  # group count of the layers in GROUPWISE_LAYERS (1: no grouped convs)
    se: str | None = None  # None, SE_BEFORE_RELU or SE_AFTER_RELU
    plus: bool = False  # RepVGGplus layout: stage3 split in two, auxiliary heads in training form
    input_size: int = 224  # the resolution the published accuracy was measured at

    @property
    def stem_channels(self) -> int:
        """Output channels of stage0: the official min(64, 64 * w0)."""
        return min(64, int(64 * self.width[0]))

    @property
    def stage_channels(self) -> tuple[int, int, int, int]:
        """Output channels of stages 1-4: base widths 64/128/256/512 times the multipliers."""
        return tuple(int(base * w) for base, w in zip((64, 128, 256, 512), self.width, strict=True))  # type: ignore[return-value]

    @property
    def se_reduction(self) -> int:
        """Channel reduction of the SE bottleneck (16 for D2se, 4 for the RepVGGplus post-SE)."""
        return 4 if self.se == SE_AFTER_RELU else 16

    def groups_of_layer(self, layer_index: int) -> int:
        """Groups of the convolutions of block `layer_index` (1-based over stages 1-4)."""
        return self.groups if self.groups > 1 and layer_index in GROUPWISE_LAYERS else 1


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)
_D = (8, 14, 24, 1)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("RepVGG-A0", _A, (0.75, 0.75, 0.75, 2.5)),
        Variant("RepVGG-A1", _A, (1, 1, 1, 2.5)),
        Variant("RepVGG-A2", _A, (1.5, 1.5, 1.5, 2.75)),
        Variant("RepVGG-B0", _B, (1, 1, 1, 2.5)),
        Variant("RepVGG-B1", _B, (2, 2, 2, 4)),
        Variant("RepVGG-B1g2", _B, (2, 2, 2, 4), groups=2),
        Variant("RepVGG-B1g4", _B, (2, 2, 2, 4), groups=4),
        Variant("RepVGG-B2", _B, (2.5, 2.5, 2.5, 5)),
        Variant("RepVGG-B2g2", _B, (2.5, 2.5, 2.5, 5), groups=2),
        Variant("RepVGG-B2g4", _B, (2.5, 2.5, 2.5, 5), groups=4),
        Variant("RepVGG-B3", _B, (3, 3, 3, 5)),
        Variant("RepVGG-B3g2", _B, (3, 3, 3, 5), groups=2),
        Variant("RepVGG-B3g4", _B, (3, 3, 3, 5), groups=4),
        Variant("RepVGG-D2se", _D, (2.5, 2.5, 2.5, 5), se=SE_BEFORE_RELU, input_size=320),
        Variant("RepVGGplus-L2pse", _D, (2.5, 2.5, 2.5, 5), se=SE_AFTER_RELU, plus=True, input_size=320),
    )
}


def _short_key(name: str) -> str:
    """'RepVGG-A0', 'repvgg_a0', 'A0', 'a0' -> 'a0'; 'RepVGGplus-L2pse', 'L2pse' -> 'l2pse'."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for prefix in ("repvggplus", "repvgg", "plus"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key


_BY_SHORT_KEY = {_short_key(name): variant for name, variant in VARIANTS.items()}


def get_variant(arch: str | Variant) -> Variant:
    """Resolve a variant name, case-insensitive and in short forms ('A0', 'repvgg_b1g4', 'L2pse')."""
    if isinstance(arch, Variant):
        return arch
    variant = _BY_SHORT_KEY.get(_short_key(arch))
    if variant is None:
        raise ModelError(f"unknown RepVGG variant {arch!r}; known: {', '.join(VARIANTS)}")
    return variant
