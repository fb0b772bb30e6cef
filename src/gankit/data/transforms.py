"""A few tensor image operations (torchvision stays optional)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 NCHW batch to size x size (antialiased bilinear), in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for part in images.split(chunk):
        x = F.interpolate(
            part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]."""
    return images.float().div_(255)


def to_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of a tanh generator (the seed's (x - 127.5) / 127.5)."""
    return images.float().sub_(127.5).div_(127.5)


def from_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float [0, 1], clamped."""
    return x.float().add(1).div_(2).clamp_(0, 1)
