"""Paired images (pix2pix): split aligned A|B files and jitter both images of a pair identically.

The seed decided its random flip once, at tf.function trace time (np.random inside the graph), so
every pair got the same flip. Here crop offsets and flips are drawn per example, from torch's RNG,
and applied to both images of the pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GankitError


def split_aligned(image: torch.Tensor, name: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, 2W) -> left half (A), right half (B). For cityscapes the photo is the left half."""
    w = image.shape[-1]
    if w % 2:
        raise GankitError(f"{name}: width {w} is odd; an aligned pair file holds A and B side by side")
    return image[..., : w // 2], image[..., w // 2 :]


def crop_batch(
    x: torch.Tensor,
    tops: torch.Tensor,
    lefts: torch.Tensor,
    height: int,
    width: int | None = None,
) -> torch.Tensor:
    """Per-example crops of height x width (default square) at (tops[i], lefts[i]), vectorised."""
    width = width or height
    n = x.shape[0]
    dev = x.device
    rows = (tops.view(-1, 1) + torch.arange(height, device=dev).view(1, -1))[:, :, None]
    cols = (lefts.view(-1, 1) + torch.arange(width, device=dev).view(1, -1))[:, None, :]
    batch = torch.arange(n, device=dev).view(-1, 1, 1)
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def paired_jitter(
    a: torch.Tensor,
    b: torch.Tensor,
    load_size: int = 286,
    crop: int = 256,
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """pix2pix's random jitter on (N, C, H, W) batches (float, or uint8 already at load_size):
    resize to load_size, random crop, random horizontal flip, one draw per example shared by its
    two images."""
    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"pair shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if load_size < crop:
        raise ValueError(f"load size {load_size} is smaller than the crop {crop}")
    n, dev = a.shape[0], a.device
    if a.shape[-2:] != (load_size, load_size):  # batches stored at the load size skip the resize
        a = F.interpolate(
            a, size=(load_size, load_size), mode="bilinear", align_corners=False, antialias=True
        )
        b = F.interpolate(
            b, size=(load_size, load_size), mode="bilinear", align_corners=False, antialias=True
        )
    tops = torch.randint(0, load_size - crop + 1, (n,), device=dev)
    lefts = torch.randint(0, load_size - crop + 1, (n,), device=dev)
    a, b = crop_batch(a, tops, lefts, crop), crop_batch(b, tops, lefts, crop)
    if flip:
        mask = (torch.rand(n, device=dev) < 0.5).view(-1, 1, 1, 1)
        a, b = torch.where(mask, a.flip(-1), a), torch.where(mask, b.flip(-1), b)
    return a, b


def jitter(x: torch.Tensor, load_size: int = 286, crop: int = 256, flip: bool = True) -> torch.Tensor:
    """The same random jitter for a batch of single images (CycleGAN's unpaired domains)."""
    return paired_jitter(x, x[:, :1], load_size, crop, flip)[0]
