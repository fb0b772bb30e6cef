"""ResNet GAN networks of the SNGAN family (Miyato et al. 2018, "Spectral Normalization for Generative
Adversarial Networks", Table 4 / Mimicry's `sngan_32`), unconditional or class-conditional.

Generator (code (paper)): z -> Linear to 4x4 (7x7 at 28 px) x ngf -> `GBlock`s, each doubling the
size (3 at 32 px, 2 at 28, 4 at 64) -> BN -> ReLU -> conv 3x3 -> tanh. A GBlock is BN -> ReLU ->
nearest 2x upsampling -> conv 3x3 -> BN -> ReLU -> conv 3x3, plus a shortcut (upsample -> conv 1x1).
Class-conditional: every BN is a conditional BN (Dumoulin et al. 2017; the cGAN-projection paper's
generator), its scale and shift looked up by class.

Discriminator: `OptimizedBlock` (conv 3x3 -> ReLU -> conv 3x3 -> 2x2 average pool, shortcut pool ->
conv 1x1) -> `DBlock`s (ReLU -> conv 3x3 -> ReLU -> conv 3x3 [-> pool], shortcut conv 1x1 [-> pool]):
one down-sampling and two plain at 28/32 px, three and one at 64 px -> ReLU -> sum over positions ->
Linear to one logit; conditional: plus the projection <embed(y), h> (Miyato & Koyama 2018). Every
convolution, linear layer and the class embedding is spectrally normalised (one power iteration per
training forward pass, `torch.nn.utils.parametrizations.spectral_norm`).

Widths: ngf 256 and ndf 128 at 32 px in the paper; smaller widths (`--ngf`, `--ndf`) for CPUs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

SIZES = (28, 32, 64)


def _sn(layer: nn.Module, on: bool = True) -> nn.Module:
    return spectral_norm(layer) if on else layer


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine, scaled and shifted per class: gamma(y) x BN(x) + beta(y)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.gamma.weight, 1.0, 0.02)  # Mimicry's: classes differ from the start
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gamma(y)[:, :, None, None].to(h.dtype) + self.beta(y)[:, :, None, None].to(h.dtype)


class _Norm(nn.Module):
    """A BN, or a conditional BN when the network has classes: one call for both."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = ConditionalBatchNorm(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)

    def forward(self, x, y):
        return self.norm(x, y) if isinstance(self.norm, ConditionalBatchNorm) else self.norm(x)


class GBlock(nn.Module):
    """The generator's residual block, doubling height and width."""

    def __init__(self, cin: int, cout: int, num_classes: int = 0):
        super().__init__()
        self.norm1, self.norm2 = _Norm(cin, num_classes), _Norm(cout, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)
        for c in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(c.weight, 2**0.5)
        nn.init.xavier_uniform_(self.shortcut.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetGenerator(nn.Module):
    """z (N, latent_dim) [, classes (N,)] -> images (N, C, S, S) in [-1, 1]."""

    def __init__(
        self, latent_dim: int = 128, channels: int = 1, size: int = 32, ngf: int = 256, num_classes: int = 0
    ):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"image size {size}: expected one of {SIZES}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.base = 7 if size == 28 else 4
        ups = {28: 2, 32: 3, 64: 4}[size]
        widths = [ngf] * (ups + 1) if size != 64 else [ngf // 2**i for i in range(ups + 1)]
        self.fc = nn.Linear(latent_dim, self.base * self.base * widths[0])
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], num_classes) for i in range(ups))
        self.norm = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.xavier_uniform_(self.out.weight)
        self.widths = widths

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(-1, self.widths[0], self.base, self.base)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.norm(h))))


class OptimizedBlock(nn.Module):
    """The discriminator's first block (no ReLU before its first convolution), halving the size."""

    def __init__(self, cin: int, cout: int, sn: bool = True):
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, 1, 1), sn)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)
        self.shortcut = _sn(nn.Conv2d(cin, cout, 1), sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    """The discriminator's residual block, halving the size when `down`."""

    def __init__(self, cin: int, cout: int, down: bool, sn: bool = True):
        super().__init__()
        self.down = down
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, 1, 1), sn)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)
        self.shortcut = _sn(nn.Conv2d(cin, cout, 1), sn) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class ResNetDiscriminator(nn.Module):
    """images (N, C, S, S) [, classes (N,)] -> logits (N, outputs); `features` gives the pooled (N, F)
    vector the head (and the projection) read. `sn=False` builds the same network without spectral
    normalisation; `outputs` > 1 gives a K-logit head (the semi-supervised GAN's classifier)."""

    def __init__(
        self,
        channels: int = 1,
        size: int = 32,
        ndf: int = 128,
        num_classes: int = 0,
        sn: bool = True,
        outputs: int = 1,
    ):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"image size {size}: expected one of {SIZES}")
        if size == 64:
            widths = [ndf // 2, ndf, ndf * 2, ndf * 4, ndf * 8]
            downs = [True, True, True, False]
        else:
            widths, downs = [ndf] * 4, [True, False, False]
        self.first = OptimizedBlock(channels, widths[0], sn)
        self.blocks = nn.Sequential(*(DBlock(widths[i], widths[i + 1], d, sn) for i, d in enumerate(downs)))
        self.head = _sn(nn.Linear(widths[-1], outputs), sn)
        self.embed = _sn(nn.Embedding(num_classes, widths[-1]), sn) if num_classes else None
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(self.first(x))).sum((2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.head(h)
        if self.embed is not None:
            out = out + (self.embed(y).to(h.dtype) * h).sum(1, keepdim=True)
        return out
