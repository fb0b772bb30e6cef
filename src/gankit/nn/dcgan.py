"""DCGAN networks: the seed's 28/32 px pair and the DCGAN paper's 64 px pair."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import glorot_init, keras_bn, normal_init

SIZES = (28, 32, 64)


class SeedGenerator(nn.Module):
    """The seed's generator: Dense(s*s*256) -> 3 transposed convs 5x5 (s, s, 2s, 4s px), tanh.

    s = size/4 (7 for 28 px, 8 for 32 px). LeakyReLU(0.2) then BatchNorm after the dense layer and
    each hidden transposed conv, as the seed orders them; no biases.
    """

    def __init__(self, latent_dim: int = 100, channels: int = 1, size: int = 28):
        super().__init__()
        self.latent_dim = latent_dim
        self.base = size // 4
        self.fc = nn.Linear(latent_dim, self.base * self.base * 256, bias=False)
        self.unflatten = nn.Unflatten(1, (256, self.base, self.base))
        self.bn0 = keras_bn(256)
        # padding=2, output_padding=1 reproduces TF's 'same' output size for 5x5 stride-2 kernels.
        self.up1 = nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False)
        self.bn1 = keras_bn(128)
        self.up2 = nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1, bias=False)
        self.bn2 = keras_bn(64)
        self.up3 = nn.ConvTranspose2d(64, channels, 5, 2, 2, output_padding=1, bias=False)
        glorot_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.unflatten(F.leaky_relu(self.fc(z), 0.2)))
        x = self.bn1(F.leaky_relu(self.up1(x), 0.2))
        x = self.bn2(F.leaky_relu(self.up2(x), 0.2))
        return torch.tanh(self.up3(x))


class SeedDiscriminator(nn.Module):
    """The seed's discriminator: 2 x (Conv 5x5 s2 -> LeakyReLU(0.2) -> Dropout 0.3) -> Dense(1) logit."""

    def __init__(self, channels: int = 1, size: int = 28, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 5, 2, 2)
        self.conv2 = nn.Conv2d(64, 128, 5, 2, 2)
        self.drop = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(128 * (size // 4) ** 2, 1)
        glorot_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, F) features the final linear layer reads (a projection head reads them too)."""
        x = self.drop(F.leaky_relu(self.conv1(x), 0.2))
        return self.flatten(self.drop(F.leaky_relu(self.conv2(x), 0.2)))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PaperGenerator(nn.Module):
    """Radford et al.'s 64 px generator: z -> 4x4x512 -> ... -> 64x64, BN + ReLU, tanh output."""

    def __init__(self, latent_dim: int = 100, channels: int = 3, width: int = 64):
        super().__init__()
        self.latent_dim, w = latent_dim, width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, w * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(w * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        normal_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class PaperDiscriminator(nn.Module):
    """Radford et al.'s 64 px discriminator: strided convs, BN (not on the first), LeakyReLU(0.2)."""

    def __init__(self, channels: int = 3, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, w * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 2, w * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w * 4),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 4, w * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w * 8),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w * 8, 1, 4, 1, 0, bias=False),
        )
        self.flatten = nn.Flatten()
        normal_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 8w * 4 * 4) features the final 4x4 convolution reads."""
        return self.flatten(self.net[:-1](x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        last = self.net[-1]  # a 4x4 convolution over a 4x4 map: a linear layer over the flat features
        return features @ last.weight.flatten(1).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def build_dcgan(size: int, channels: int, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `size` px images with `channels` channels."""
    if size in (28, 32):
        return SeedGenerator(latent_dim, channels, size), SeedDiscriminator(channels, size)
    if size == 64:
        return PaperGenerator(latent_dim, channels), PaperDiscriminator(channels)
    raise ValueError(f"image size {size} not supported; choose one of {SIZES}")
