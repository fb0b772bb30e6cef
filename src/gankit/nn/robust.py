"""Classifier networks of the robust-training literature, as their papers tabulate them.

- `MadryCNN` (Madry et al. 2018, MNIST): conv 5x5 32, max-pool 2, conv 5x5 64, max-pool 2, fc 1024,
  fc K; ReLU throughout, no normalisation.
- `PreActResNet18` (He et al. 2016, pre-activation; the network of Rice et al. 2020 and Wong et al.
  2020 on CIFAR-10): a 3x3 stem of 64 filters, four stages of two pre-activation basic blocks (64,
  128, 256, 512 filters; stride 2 from the second stage on), batch norm and ReLU, global average
  pooling, fc K.
- `SSGANTrunk`: the semi-supervised GAN's classifier (gankit.nn.ssgan.SharedDiscriminator), its class
  logits only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ssgan import SharedDiscriminator


class MadryCNN(nn.Module):
    """The MNIST network of Madry et al. 2018, for `channels` x `size` x `size` inputs (size % 4 == 0)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 1024), nn.ReLU(), nn.Linear(1024, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for small images (32 px in the papers; any size works)."""

    def __init__(self, num_classes: int = 10, channels: int = 3, width: int = 64):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        blocks, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            blocks += [PreActBlock(cin, cout, 1 if i == 0 else 2), PreActBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class SSGANTrunk(nn.Module):
    """The semi-supervised GAN's classifier network, returning its class logits."""

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28):
        super().__init__()
        self.net = SharedDiscriminator(num_classes, channels, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


NETWORKS = {"madry-cnn": MadryCNN, "preact-resnet18": PreActResNet18, "ssgan": SSGANTrunk}


def build(name: str, num_classes: int, channels: int, size: int) -> nn.Module:
    """A network of NETWORKS by name."""
    if name == "preact-resnet18":
        return PreActResNet18(num_classes, channels)
    return NETWORKS[name](num_classes, channels, size)
