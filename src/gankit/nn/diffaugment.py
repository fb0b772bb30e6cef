"""Differentiable augmentation for GAN training on small data (Zhao et al. 2020, "DiffAugment").

A discriminator trained on a few thousand images memorises them: its real and fake outputs drift
apart and the generator's gradients stop carrying information. DiffAugment applies the same family of
random transformations to *every* image the discriminator sees, real or generated, inside the training
step; the transformations are differentiable, so the generator is trained through them, and it is
never asked to produce augmented images.

Policies (as in the paper, for images in [-1, 1]):
- `color`: brightness (+ U(-0.5, 0.5)), saturation (x U(0, 2) about the per-pixel channel mean),
  contrast (x U(0.5, 1.5) about the image mean);
- `translation`: an integer shift of up to 1/8 of the side in each direction, zero padded;
- `cutout`: a zeroed square of half the side at a random centre (clipped at the borders).

Every parameter is drawn per sample, on the images' device, from the default generator of that device
(so a checkpoint's RNG state makes a resumed run draw the same augmentations); nothing is synchronised
with the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' / 'none' / None -> (). Raises ValueError on
    an unknown name (the caller names the option)."""
    if policy is None:
        return ()
    names = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        expected = ", ".join(POLICIES)
        raise ValueError(f"unknown augmentation {unknown[0]!r}: expected a comma list of {expected}")
    return tuple(dict.fromkeys(names))


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


def _color(x: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)  # brightness, the same for every channel
    parts, start = [], 0
    sat, con = _uniform(x, 0.0, 2.0), _uniform(x, 0.5, 1.5)
    for c in groups:  # saturation and contrast within each image of a stacked (input, target) pair
        part = x[:, start : start + c]
        start += c
        mean = part.mean(dim=1, keepdim=True)
        part = (part - mean) * sat + mean
        mean = part.mean(dim=(1, 2, 3), keepdim=True)
        parts.append((part - mean) * con + mean)
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    # Output pixel (i, j) reads input (i - dy, j - dx), or zero outside: gather from a zero-padded copy.
    ys = (torch.arange(h, device=x.device).view(1, h, 1) - dy + 1).clamp(0, h + 1)
    xs = (torch.arange(w, device=x.device).view(1, 1, w) - dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, ys, xs].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: Sequence[str], groups: Sequence[int] | None = None) -> torch.Tensor:
    """Augment a batch (N, C, H, W) with `policy` (names from POLICIES), differentiably, per sample.

    `groups` splits the channels into images stacked along C (a conditional discriminator's input and
    target): colour statistics are taken within each, while shifts and cutouts move them together.
    """
    if not policy:
        return x
    groups = list(groups or [x.shape[1]])
    if sum(groups) != x.shape[1]:
        raise ValueError(f"channel groups {groups} do not add up to {x.shape[1]} channels")
    memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
    for name in policy:
        if name == "color":
            x = _color(x, groups)
        elif name == "translation":
            x = _translation(x)
        elif name == "cutout":
            x = _cutout(x)
    return x.contiguous(memory_format=memory_format) if memory_format else x.contiguous()
