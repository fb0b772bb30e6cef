"""Instance norm (and batch norm with per-image statistics) that keeps a channels-last network
channels-last, with correct gradients.

On CPU (per-image statistics, up to MAX_IMAGES images) each image is normalised by `F.batch_norm` in
training mode on its own (1, C, H, W) slice: the statistics over its H x W pixels per channel are
exactly instance norm's, and batch norm's CPU kernels read and write channels-last directly. torch's
instance norm reshapes to (1, N*C, H, W), so it returns an NCHW tensor that every following convolution
converts back, forward and backward: CycleGAN spent 9% of its step in those copies on the AMD EPYC, and
a conv-norm-conv block ran 1.1-1.9x faster this way (docs/guides/performance.md).

Rule: nn.InstanceNorm2d without running statistics, and the eval mode of a per-image batch norm
(`gankit.nn.unet.PerImageBatchNorm2d`), on a CPU batch of at most MAX_IMAGES. Replaces torch's instance
norm. Justified by the CycleGAN and Pix2Pix rows of benchmarks/run_all.py.

Not a speed path but a fix, taken wherever the stock instance norm runs: with PyTorch 2.13 on CPU its
backward is wrong for a single image when the incoming gradient is channels-last (0.09 max error on a
conv-norm-conv stack; tests/test_nets.py), so it is handed a contiguous gradient (`stock_instance_norm`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_IMAGES = 16


def applies(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    return len(x) <= MAX_IMAGES


def per_image_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor | None:
    """Instance normalisation of a CPU batch of up to MAX_IMAGES images as one `F.batch_norm`
    (training-mode statistics, no running averages) per (1, C, H, W) image: the same statistics as
    instance norm, in the input's memory layout."""
    if len(x) == 1:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    # split, not x[i : i + 1]: a slice's backward fills a zero tensor of x's full size and copies its
    # part in, and the N of them are then summed; split's backward is one concatenation. Fwd + bwd over
    # the U-Net's normalised maps on the AMD EPYC Zen 3: batch 2 55 -> 15 ms, batch 3 86 -> 24 ms, and
    # batch 1 without any slice 23 -> 4 ms (docs/guides/performance.md).
    return torch.cat([F.batch_norm(p, None, None, weight, bias, True, 0.0, eps) for p in x.split(1)])


def stock_instance_norm(layer: nn.InstanceNorm2d, x: torch.Tensor, forward) -> torch.Tensor:
    """`forward(x)` (the stock layer's), its backward handed a contiguous gradient (see above)."""
    y = forward(x)
    if y.requires_grad:
        y.register_hook(lambda g: g.contiguous())
    return y
