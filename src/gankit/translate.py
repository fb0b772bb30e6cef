"""Apply a trained image-to-image generator to images of any size and aspect.

The generators are built for size x size inputs. A smaller image (either side) is reflect-padded up
to the size; a larger one is cut into overlapping size x size tiles whose outputs are blended with
a weight that falls off towards each tile's border, so no seams show. The output is cropped back to
the original height and width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .data.transforms import from_tanh_range, to_tanh_range


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride)) + [length - size]
    return sorted(set(starts))


def _blend_weight(size: int, device) -> torch.Tensor:
    ramp = torch.minimum(
        torch.arange(size, device=device) + 1.0, size - torch.arange(size, device=device) + 0.0
    )
    w = ramp.clamp_max(size / 4) / (size / 4)
    return (w.view(-1, 1) * w.view(1, -1)).clamp_min(1e-3)


@torch.no_grad()
def translate_image(
    net: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    size: int,
    out_channels: int,
    batch_size: int = 8,
) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (out_channels, H, W) through `net` (tanh-range in and out)."""
    c, h, w = image.shape
    x = to_tanh_range(image.unsqueeze(0))
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    H, W = x.shape[-2:]
    stride = size * 3 // 4
    boxes = [(t, left) for t in _starts(H, size, stride) for left in _starts(W, size, stride)]
    out = torch.zeros(out_channels, H, W, device=x.device)
    norm = torch.zeros(1, H, W, device=x.device)
    weight = _blend_weight(size, x.device) if len(boxes) > 1 else torch.ones(size, size, device=x.device)
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k : k + batch_size]
        tiles = torch.cat([x[..., t : t + size, left : left + size] for t, left in chunk])
        y = net(tiles).float()
        for (t, left), tile in zip(chunk, y):
            out[:, t : t + size, left : left + size] += tile * weight
            norm[:, t : t + size, left : left + size] += weight
    y = (out / norm)[:, :h, :w]
    return (from_tanh_range(y) * 255).round().clamp(0, 255).to(torch.uint8)
