"""Initialisations and layer settings shared by the networks."""

from __future__ import annotations

import torch.nn as nn


def keras_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with Keras' defaults (momentum 0.99 = torch momentum 0.01, eps 1e-3), as the seed."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def glorot_init(module: nn.Module) -> None:
    """Keras' default initialisation (Glorot-uniform weights, zero biases) for conv and dense layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """The DCGAN/pix2pix initialisation: weights N(0, std), norm scales N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
