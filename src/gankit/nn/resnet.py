"""The CycleGAN paper's ResNet generator (Zhu et al. 2017, after Johnson et al. 2016).

c7s1-64, d128, d256, R256 x n_blocks (9 at 256 px), u128, u64, c7s1-C, tanh; reflection padding,
instance norm (affine, as the seed's CycleGAN layer), ReLU; weights N(0, 0.02). Fully convolutional:
any size divisible by 4 works.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import normal_init
from .unet import norm_layer


class ResidualBlock(nn.Module):
    """x + (pad-conv3x3-norm-ReLU-pad-conv3x3-norm)(x)."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        bias = norm == "instance"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """See the module docstring."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        n_blocks: int = 9,
        norm: str = "instance",
        width: int = 64,
    ):
        super().__init__()
        bias = norm == "instance"
        w = width
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, w, 7, bias=bias),
            norm_layer(norm, w),
            nn.ReLU(True),
        ]
        for m in (1, 2):  # two stride-2 downsamplings
            layers += [
                nn.Conv2d(w * m, w * m * 2, 3, 2, 1, bias=bias),
                norm_layer(norm, w * m * 2),
                nn.ReLU(True),
            ]
        layers += [ResidualBlock(w * 4, norm) for _ in range(n_blocks)]
        for m in (4, 2):
            layers += [
                nn.ConvTranspose2d(w * m, w * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                norm_layer(norm, w * m // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"ResnetGenerator needs sides divisible by 4, got {tuple(x.shape[-2:])}")
        return self.net(x)
