"""The re-parameterisation math as small pure functions on tensors.

A train-time RepVGG block computes BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x); all three are
linear in x, so they collapse into one 3x3 convolution with a bias. Kept free of modules so
each step can be tested on its own and reused for every checkpoint layout.

The functions compute in the dtype they are given; the model code passes float64 and casts
the final kernel back once, so the fused weights carry one float32 rounding instead of several.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fold_batchnorm(
    kernel: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a bias-free conv into (kernel, bias).

    BN(conv(x)) = gamma * (W*x - mu) / sigma + beta = (W * gamma/sigma) * x + (beta - mu * gamma/sigma).
    """
    scale = gamma / torch.sqrt(running_var + eps)
    return kernel * scale.reshape(-1, 1, 1, 1), beta - running_mean * scale


def pad_1x1_to_3x3(kernel: torch.Tensor) -> torch.Tensor:
    """Zero-pad a 1x1 kernel to 3x3 so it adds onto the centre tap of the 3x3 branch.

    Valid because the 1x1 branch uses padding 0 where the 3x3 uses padding 1 with the same stride.
    """
    if kernel.shape[-2:] != (1, 1):
        raise ValueError(f"expected a 1x1 kernel, got {tuple(kernel.shape)}")
    return F.pad(kernel, [1, 1, 1, 1])


def identity_kernel(channels: int, groups: int = 1, kernel_size: int = 3,
                    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """A (grouped) conv kernel that reproduces its input: K[i, i % (channels/groups), centre, centre] = 1.

    With groups, output channel i sees only the input channels of its own group, where input
    channel i sits at position i % (channels // groups).
    """
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=dtype, device=device)
    centre = kernel_size // 2
    index = torch.arange(channels)
    kernel[index, index % per_group, centre, centre] = 1
    return kernel


def sum_branches(*branches: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Add up (kernel, bias) pairs of parallel branches; `None` stands for an absent branch."""
    present = [b for b in branches if b is not None]
    if not present:
        raise ValueError("no branch to fuse")
    return torch.stack([k for k, _ in present]).sum(0), torch.stack([b for _, b in present]).sum(0)
