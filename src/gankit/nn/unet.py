"""The pix2pix U-Net generator (Isola et al. 2017), as the seed builds it, for any power-of-two size.

Down-blocks: Conv 4x4 stride 2 -> norm (not on the first) -> LeakyReLU 0.2, filters 64, 128, 256, then
512 until the bottleneck is 1x1 (8 blocks at 256 px, 7 at 128, 9 at 512). Up-blocks: ConvT 4x4 stride 2 ->
norm -> dropout 0.5 (first three) -> ReLU, each concatenated with the mirrored down-block's output; a
final ConvT 4x4 stride 2 to the output channels and tanh. Weights N(0, 0.02).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import normal_init


class PerImageBatchNorm2d(nn.BatchNorm2d):
    """Batch norm in training; in eval mode each image is normalised by its own statistics.

    pix2pix translates at test time with the statistics of the image at hand (the paper trains and
    tests at batch 1), not with running averages. Normalising each image alone keeps that and makes a
    translation independent of which other images or tiles share its batch. The running statistics
    are still tracked (and checkpointed), as in nn.BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """'batch' (the seed; per-image statistics in eval mode), 'instance' (affine, as the seed's CycleGAN
    layer) or 'none'."""
    if kind == "batch":
        return PerImageBatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: expected batch, instance or none")


def unet_filters(size: int, width: int = 64) -> list[int]:
    """Filters of the down-blocks for `size` px inputs: 64-128-256 then 512 down to 1x1 (for `width` 64;
    the filters scale with `width`)."""
    if size < 8 or size & (size - 1):
        raise ValueError(f"U-Net input size must be a power of two >= 8, got {size}")
    depth = int(math.log2(size))
    return [min(width * 2**i, width * 8) for i in range(depth)]


class UNetGenerator(nn.Module):
    """U-Net with skip connections; depth follows `size` (see the module docstring)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        size: int = 256,
        norm: str = "batch",
        dropout: float = 0.5,
        width: int = 64,
    ):
        super().__init__()
        filters = unet_filters(size, width)
        self.size = size
        self.down = nn.ModuleList()
        prev = in_channels
        for i, f in enumerate(filters):
            # The bottleneck (1x1) gets no norm: batch statistics of a 1x1 map over batch 1 are degenerate.
            use_norm = 0 < i < len(filters) - 1
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(prev, f, 4, 2, 1, bias=not use_norm or norm == "instance"),
                    norm_layer(norm, f) if use_norm else nn.Identity(),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            prev = f
        self.up = nn.ModuleList()
        skips = list(reversed(filters[:-1]))
        for i, f in enumerate(skips):
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(prev, f, 4, 2, 1, bias=norm == "instance"),
                    norm_layer(norm, f),
                    nn.Dropout(dropout if i < 3 else 0.0),
                    nn.ReLU(inplace=True),
                )
            )
            prev = 2 * f  # concatenated with the skip
        self.last = nn.ConvTranspose2d(prev, out_channels, 4, 2, 1)
        normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(f"UNetGenerator built for {self.size} px, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = torch.cat([block(x), skip], dim=1)
        return torch.tanh(self.last(x))
