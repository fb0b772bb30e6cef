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
    a, b = _jitter([a, b], load_size, crop, flip)
    return a, b


def jitter(x: torch.Tensor, load_size: int = 286, crop: int = 256, flip: bool = True) -> torch.Tensor:
    """The same random jitter for a batch of single images (CycleGAN's unpaired domains)."""
    return _jitter([x], load_size, crop, flip)[0]


def _jitter(batches: list[torch.Tensor], load_size: int, crop: int, flip: bool) -> list[torch.Tensor]:
    """Resize, crop and flip equally shaped batches with one draw per example shared by all."""
    if load_size < crop:
        raise ValueError(f"load size {load_size} is smaller than the crop {crop}")
    n, dev = batches[0].shape[0], batches[0].device
    if batches[0].shape[-2:] != (load_size, load_size):  # batches stored at the load size skip it
        size = (load_size, load_size)
        batches = [
            F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True) for x in batches
        ]
    tops = torch.randint(0, load_size - crop + 1, (n,), device=dev)
    lefts = torch.randint(0, load_size - crop + 1, (n,), device=dev)
    batches = [crop_batch(x, tops, lefts, crop) for x in batches]
    if flip:
        mask = (torch.rand(n, device=dev) < 0.5).view(-1, 1, 1, 1)
        batches = [torch.where(mask, x.flip(-1), x) for x in batches]
    return batches
