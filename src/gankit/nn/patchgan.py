"""The 70x70 PatchGAN discriminator (pix2pix / CycleGAN), optionally conditional on the input image."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import normal_init
from .unet import norm_layer


class PatchDiscriminator(nn.Module):
    """C64 - C128 - C256 (stride 2) - C512 (stride 1) - 1-channel logit map; a 70x70 receptive field.

    `in_channels` is the sum of the input and target channels for the conditional pix2pix D
    (forward(x, y) concatenates them) or the image channels for CycleGAN's unconditional D.
    """

    def __init__(self, in_channels: int = 6, norm: str = "batch", width: int = 64):
        super().__init__()
        w = width
        bias = norm == "instance"
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, w * 2, 4, 2, 1, bias=bias),
            norm_layer(norm, w * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 2, w * 4, 4, 2, 1, bias=bias),
            norm_layer(norm, w * 4),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 4, w * 8, 4, 1, 1, bias=bias),
            norm_layer(norm, w * 8),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 8, 1, 4, 1, 1),
        )
        normal_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x if y is None else torch.cat([x, y], dim=1))


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Receptive field of stacked (kernel, stride) convolutions."""
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return rf
