"""A few tensor image operations (torchvision stays optional)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pairs import crop_batch


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


def to_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of a tanh generator (the seed's (x - 127.5) / 127.5)."""
    return images.float().sub_(127.5).div_(127.5)


def from_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float [0, 1], clamped."""
    return x.float().add(1).div_(2).clamp_(0, 1)


def random_flip_shift(images: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """Per-sample random horizontal flip and translation by up to `shift` pixels (zero padding), for an
    (N, C, H, W) batch, vectorised (no per-sample Python); random draws come from torch's global RNG."""
    n, _, h, w = images.shape
    dev = images.device
    if flip:
        mask = torch.rand(n, device=dev) < 0.5
        images = torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)
    if shift > 0:
        padded = F.pad(images, (shift, shift, shift, shift))
        tops = torch.randint(0, 2 * shift + 1, (n,), device=dev)
        lefts = torch.randint(0, 2 * shift + 1, (n,), device=dev)
        images = crop_batch(padded, tops, lefts, h, w)
    return images.contiguous()
