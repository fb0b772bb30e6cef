"""Semi-supervised GAN networks (Salimans et al. 2016, as the seed builds them)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import glorot_init
from .sngan import ResNetDiscriminator


class SharedDiscriminator(nn.Module):
    """One trunk, two heads: K class logits for the classifier, and a real/fake logit
    D = logsumexp(class logits), so that P(real) = sigmoid(D) = Z / (Z + 1) with Z = sum(exp(logits)).

    The seed computes Z / (Z + 1) directly, which overflows for large logits; logsumexp does not.
    Trunk: 3 x (Conv 128 3x3 stride 2, LeakyReLU 0.2), Flatten, Dropout 0.4, Dense K.
    `input_noise` > 0 adds Gaussian noise of that standard deviation to the input images in training
    mode, `hidden_noise` > 0 to each convolution's output, and `weight_norm` reparametrises every
    layer's weight as g * v / ||v|| (Salimans & Kingma 2016): Salimans et al.'s MNIST discriminator has
    all three (noise 0.3 on inputs, 0.5 on hidden layers), regularisers of both heads.
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 1,
        size: int = 28,
        width: int = 128,
        input_noise: float = 0.0,
        hidden_noise: float = 0.0,
        weight_norm: bool = False,
    ):
        super().__init__()
        self.num_classes, self.input_noise, self.hidden_noise = num_classes, input_noise, hidden_noise
        self.convs = nn.ModuleList(
            [nn.Conv2d(channels if i == 0 else width, width, 3, 2, 1) for i in range(3)]
        )
        side = size
        for _ in range(3):
            side = (side + 1) // 2
        self.drop = nn.Dropout(0.4)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(width * side * side, num_classes)
        glorot_init(self)
        if weight_norm:
            for layer in [*self.convs, self.head]:
                nn.utils.parametrizations.weight_norm(layer)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened trunk output (used by the feature-matching generator loss)."""
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            if self.training and self.hidden_noise > 0:
                x = x + self.hidden_noise * torch.randn_like(x)
        return self.flatten(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (class logits, trunk features)."""
        f = self.features(x)
        return self.head(self.drop(f)), f


class ResNetSharedDiscriminator(nn.Module):
    """The SNGAN family's ResNet discriminator (gankit.nn.sngan) as the semi-supervised GAN's shared
    classifier: K class logits from its pooled features, D = logsumexp of them as for the seed's
    network; `sn` spectral-normalises every layer as SNGAN does (off: the same ResNet, unconstrained)."""

    def __init__(
        self, num_classes: int = 10, channels: int = 1, size: int = 28, width: int = 128, sn: bool = False
    ):
        super().__init__()
        self.num_classes = num_classes
        self.net = ResNetDiscriminator(channels, size, width, sn=sn, outputs=num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk output averaged over positions (used by the feature-matching generator loss):
        a classifier's global average pool, where SNGAN's discriminator sums."""
        return F.relu(self.net.blocks(self.net.first(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (class logits, trunk features)."""
        f = self.features(x)
        return self.net.head(f), f


def real_fake_logit(class_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's logit: logsumexp of the class logits (finite for any finite logits)."""
    return torch.logsumexp(class_logits.float(), dim=1)


class SSGANGenerator(nn.Module):
    """The seed's generator: Dense(s*s*128) -> 2 x (ConvT 128 4x4 s2, LeakyReLU 0.2) -> Conv 7x7 -> tanh."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, size: int = 28, width: int = 128):
        super().__init__()
        self.latent_dim, self.base, self.width = latent_dim, size // 4, width
        self.fc = nn.Linear(latent_dim, width * self.base * self.base)
        self.unflatten = nn.Unflatten(1, (width, self.base, self.base))
        self.up1 = nn.ConvTranspose2d(width, width, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(width, width, 4, 2, 1)
        self.out = nn.Conv2d(width, channels, 7, 1, 3)
        glorot_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.unflatten(F.leaky_relu(self.fc(z), 0.2))
        x = F.leaky_relu(self.up1(x), 0.2)
        x = F.leaky_relu(self.up2(x), 0.2)
        return torch.tanh(self.out(x))
