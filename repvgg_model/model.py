"""RepVGG and RepVGGplus networks in train-time and deploy form.

Module and attribute names follow the official DingXiaoH/RepVGG code exactly (`stage0`,
`stage1.0.rbr_dense.conv`, `rbr_1x1`, `rbr_identity`, `se.down/up`, `post_se`, `linear`,
RepVGGplus `stage3_first.blocks.0` and `stage1_aux`), so that `state_dict()` keys are those
of the published checkpoints and loading needs no renaming for the official layout.

Deviations from the official code, all output-preserving for square inputs:
- the SE squeeze is a global average (`adaptive_avg_pool2d(x, 1)`, ONNX GlobalAveragePool)
  instead of `avg_pool2d(kernel=W)`, which only equals it for square feature maps;
- the head flattens with `torch.flatten(x, 1)`, which exports as one ONNX Flatten;
- RepVGGplus' `forward` returns the main logits only; `forward_train` returns the
  auxiliary heads' logits too (the custom L2 term of the official training code is left out).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from repvgg_model.fusion import fold_batchnorm, identity_kernel, pad_1x1_to_3x3, sum_branches
from repvgg_model.variants import SE_AFTER_RELU, SE_BEFORE_RELU, Variant, get_variant


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm; children named `conv` and `bn` as in the official code."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


class SEBlock(nn.Module):
    """Squeeze-and-excitation with the official key names `down` / `up` (1x1 convs with bias)."""

    def __init__(self, channels: int, internal_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, internal_channels, kernel_size=1, bias=True)
        self.up = nn.Conv2d(internal_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.up(F.relu(self.down(scale))))
        return x * scale


class RepVGGBlock(nn.Module):
    """One RepVGG layer: 3x3 + 1x1 + identity-BN branches when training, a single 3x3 conv once fused.

    `se` selects the squeeze-and-excitation placement of the variant: applied to the branch sum
    before the ReLU (D2se, attribute `se`) or after it (RepVGGplus, attribute `post_se`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, deploy: bool = False,
                 se: str | None = None, se_reduction: int = 16) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.nonlinearity = nn.ReLU()
        se_module = SEBlock(out_channels, out_channels // se_reduction) if se else None
        self.se = se_module if se == SE_BEFORE_RELU else nn.Identity()
        self.post_se = se_module if se == SE_AFTER_RELU else nn.Identity()
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=True)
        else:
            has_identity = in_channels == out_channels and stride == 1
            self.rbr_identity = nn.BatchNorm2d(in_channels) if has_identity else None
            self.rbr_dense = ConvBN(in_channels, out_channels, 3, stride, 1, groups)
            self.rbr_1x1 = ConvBN(in_channels, out_channels, 1, stride, 0, groups)

    @property
    def is_fused(self) -> bool:
        return hasattr(self, "rbr_reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_fused:
            out = self.rbr_reparam(x)
        else:
            out = self.rbr_dense(x) + self.rbr_1x1(x)
            if self.rbr_identity is not None:
                out = out + self.rbr_identity(x)
        return self.post_se(self.nonlinearity(self.se(out)))

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (kernel, bias) of the single 3x3 conv equal to the three eval-mode branches (float64)."""

        def folded(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
            return fold_batchnorm(kernel.double(), bn.running_mean.double(), bn.running_var.double(),
                                  bn.weight.double(), bn.bias.double(), bn.eps)

        dense = folded(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = folded(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        identity = None
        if self.rbr_identity is not None:
            kernel = identity_kernel(self.in_channels, self.groups, 3, torch.float64, self.rbr_dense.conv.weight.device)
            identity = folded(kernel, self.rbr_identity)
        return sum_branches(dense, (pad_1x1_to_3x3(k1), b1), identity)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by their equivalent 3x3 conv in place (a no-op when already fused)."""
        if self.is_fused:
            return
        kernel, bias = self.equivalent_kernel_bias()
        dense = self.rbr_dense.conv
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1, groups=self.groups, bias=True)
        conv = conv.to(device=dense.weight.device, dtype=dense.weight.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = conv


def _blocks(variant: Variant, in_channels: int, out_channels: int, count: int, stride: int, first_layer: int,
            deploy: bool, grouped: bool = True) -> list[RepVGGBlock]:
    """`count` blocks, the first with `stride`; layer indices start at `first_layer` for the group map."""
    blocks = []
    for i in range(count):
        groups = variant.groups_of_layer(first_layer + i) if grouped else 1
        blocks.append(RepVGGBlock(in_channels, out_channels, stride if i == 0 else 1, groups, deploy,
                                  variant.se, variant.se_reduction))
        in_channels = out_channels
    return blocks


class RepVGG(nn.Module):
    """RepVGG A/B/D: stage0 (stem block), stages 1-4, global pooling, `linear` classifier."""

    def __init__(self, variant: Variant | str, num_classes: int = 1000, deploy: bool = False) -> None:
        super().__init__()
        self.variant = get_variant(variant)
        v = self.variant
        widths = v.stage_channels
        self.stage0 = RepVGGBlock(3, v.stem_channels, 2, 1, deploy, v.se, v.se_reduction)
        in_channels, layer = v.stem_channels, 1
        for k in range(4):
            stage = nn.Sequential(*_blocks(v, in_channels, widths[k], v.num_blocks[k], 2, layer, deploy))
            setattr(self, f"stage{k + 1}", stage)
            in_channels, layer = widths[k], layer + v.num_blocks[k]
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        for k in range(1, 5):
            x = getattr(self, f"stage{k}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.gap(self.features(x)), 1))


class RepVGGplusStage(nn.Module):
    """A RepVGGplus stage: the official code keeps its blocks under `.blocks`."""

    def __init__(self, blocks: list[RepVGGBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _aux_head(channels: int, num_classes: int) -> nn.Sequential:
    """The official auxiliary classifier: conv-bn-relu (stride 2), global pooling, flatten, linear."""
    downsample = ConvBN(channels, channels, 3, 2, 1)
    downsample.add_module("relu", nn.ReLU())
    return nn.Sequential(downsample, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


AUX_HEADS = ("stage1_aux", "stage2_aux", "stage3_first_aux")


class RepVGGplus(nn.Module):
    """RepVGGplus (L2pse): stage3 split in halves, auxiliary heads after stages 1, 2 and 3_first when training."""

    def __init__(self, variant: Variant | str = "RepVGGplus-L2pse", num_classes: int = 1000,
                 deploy: bool = False) -> None:
        super().__init__()
        self.variant = get_variant(variant)
        v = self.variant
        w = v.stage_channels
        half = v.num_blocks[2] // 2

        def stage(cin: int, cout: int, count: int, stride: int) -> RepVGGplusStage:
            return RepVGGplusStage(_blocks(v, cin, cout, count, stride, 0, deploy, grouped=False))

        self.stage0 = RepVGGBlock(3, v.stem_channels, 2, 1, deploy, v.se, v.se_reduction)
        self.stage1 = stage(v.stem_channels, w[0], v.num_blocks[0], 2)
        self.stage2 = stage(w[0], w[1], v.num_blocks[1], 2)
        self.stage3_first = stage(w[1], w[2], half, 2)
        self.stage3_second = stage(w[2], w[2], v.num_blocks[2] - half, 1)
        self.stage4 = stage(w[2], w[3], v.num_blocks[3], 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(w[3], num_classes)
        if not deploy:
            self.stage1_aux = _aux_head(w[0], num_classes)
            self.stage2_aux = _aux_head(w[1], num_classes)
            self.stage3_first_aux = _aux_head(w[2], num_classes)

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Main and auxiliary logits, as the official training forward returns them (without the L2 term)."""
        outputs: dict[str, torch.Tensor] = {}
        x = self.stage0(x)
        for name in ("stage1", "stage2", "stage3_first", "stage3_second", "stage4"):
            x = getattr(self, name)(x)
            if hasattr(self, f"{name}_aux"):
                outputs[f"{name}_aux"] = getattr(self, f"{name}_aux")(x)
        outputs["main"] = self.linear(torch.flatten(self.gap(x), 1))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        for name in ("stage1", "stage2", "stage3_first", "stage3_second", "stage4"):
            x = getattr(self, name)(x)
        return self.linear(torch.flatten(self.gap(x), 1))


def create_model(arch: str | Variant, num_classes: int = 1000, deploy: bool = False) -> nn.Module:
    """Build any official variant ('RepVGG-A0', 'A0', 'repvgg_b1g4', 'RepVGGplus-L2pse', ...) in eval mode."""
    variant = get_variant(arch)
    cls = RepVGGplus if variant.plus else RepVGG
    return cls(variant, num_classes, deploy).eval()


def repvgg_blocks(model: nn.Module) -> list[RepVGGBlock]:
    return [m for m in model.modules() if isinstance(m, RepVGGBlock)]


def fuse_model(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """Deploy form of `model`: every block re-parameterised, auxiliary heads dropped.

    Returns the fused model (eval mode) and how many blocks were fused by this call.
    """
    if not inplace:
        model = copy.deepcopy(model)
    fused = 0
    for block in repvgg_blocks(model):
        if not block.is_fused:
            block.reparameterize()
            fused += 1
    for name in AUX_HEADS:
        if hasattr(model, name):
            delattr(model, name)
    return model.eval(), fused
