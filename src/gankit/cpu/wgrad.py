"""The weight gradient of fp32 4x4 stride-2 layers at small batches as one GEMM.

Their forward and input gradient run near the machine's matrix-product rate in oneDNN, their weight
gradient at half of it or less (the U-Net's 1024 -> 256 transposed layer at 16 px: 31 against 77-94
GMAC/s on the AMD EPYC Zen 3); as the product of the pixels with the 4x4 patches of the other side (a
strided view and one copy), 1.2-2.7x faster there for the layer alone.

Rule (`applies`): a Conv2d or ConvTranspose2d on CPU, 4x4, stride 2, padding 1, undilated, no output
padding, fp32 outside autocast, at least GEMM_WGRAD_MIN_CHANNELS on the pixels' side (the input of a
transposed layer, the output of a convolution), a batch of at most GEMM_WGRAD_MAX_BATCH, and this
machine's calibration found the weight gradient faster (`gankit.cpu.algorithms`). Replaces oneDNN's
weight-gradient kernel (its forward and input gradient are kept). Justified by the Pix2Pix and CycleGAN
fp32 rows of benchmarks/run_all.py (thresholds below).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import algorithms


def _patches(t: torch.Tensor) -> torch.Tensor:
    """(N*Ho*Wo, 16*C): the 4x4, stride-2 patches of `t` (N, C, H, W) padded by 1, in (row, column,
    channel) order, the memory order of a channels-last 4x4 weight: a strided view and one copy."""
    c = t.shape[1]
    p = F.pad(t.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))
    return p.unfold(1, 4, 2).unfold(2, 4, 2).permute(0, 1, 2, 4, 5, 3).reshape(-1, 16 * c)


class _StridedConv(torch.autograd.Function):
    """A 4x4, stride-2, padding-1 convolution (or transposed convolution) whose forward and input
    gradient are oneDNN's and whose weight gradient is one GEMM: for a convolution (weight (O, C, 4, 4))
    dW = dY^T @ patches(X), for a transposed one (weight (C, O, 4, 4)) dW = X^T @ patches(dY), both
    with pixels as rows and coming out in the channels-last weight's memory order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.transposed = transposed
        return (F.conv_transpose2d if transposed else F.conv2d)(x, weight, None, 2, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, weight = ctx.saved_tensors
        transposed = ctx.transposed
        gy = gy.contiguous(memory_format=torch.channels_last)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                gy, x, weight, None, [2, 2], [1, 1], [1, 1], transposed, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            pixels, other = (x, gy) if transposed else (gy, x)
            rows = pixels.permute(0, 2, 3, 1).reshape(-1, pixels.shape[1])  # (N*H*W, channels)
            gw = rows.t() @ _patches(other)  # (rows' channels, 16 * other's channels)
            gw = gw.view(weight.shape[0], 4, 4, weight.shape[1]).permute(0, 3, 1, 2)
        return gx, gw, None


def strided_conv(x: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """`F.conv2d(x, weight, None, 2, 1)` (or `F.conv_transpose2d`) for a 4x4 weight, x and weight in
    the same dtype, with the weight gradient as one GEMM (`_StridedConv`)."""
    return _StridedConv.apply(x, weight, transposed)


# The GEMM weight gradient multiplies the pixels of one side (the input of a transposed layer, the
# output gradient of a convolution) with the 4x4 patches of the other, a copy 4x the size of that side:
# it pays where each patch element meets at least this many channels of the pixels' side (that copy
# of the U-Net's 64-channel 128 px map at batch 2-3 takes 2.5-3.1 ms in the Zen 3's step; torch.profiler
# had charged it ~30). Threshold measured in the steps (fp32, ms/step): Pix2Pix 64: 584-585,
# 128: 576-577, 512: 582-585; CycleGAN 128: 2,268, 256: 2,272-2,296, 512: 2,319-2,340. Batches above
# GEMM_WGRAD_MAX_BATCH keep oneDNN's kernel (SSGAN's 100: no faster, 200 MB more).
GEMM_WGRAD_MIN_CHANNELS = 128
GEMM_WGRAD_MAX_BATCH = 8


def applies(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a Conv2d or ConvTranspose2d on the CPU runs by `strided_conv` (the module docstring's rule)."""
    return (
        dtype == torch.float32
        and layer.kernel_size == (4, 4)
        and layer.stride == (2, 2)
        and layer.padding == (1, 1)
        and layer.dilation == (1, 1)
        and tuple(getattr(layer, "output_padding", (0, 0))) == (0, 0)
        and (layer.in_channels if layer.transposed else layer.out_channels) >= GEMM_WGRAD_MIN_CHANNELS
        and x.shape[0] <= GEMM_WGRAD_MAX_BATCH
        and algorithms.verdict("gemm_wgrad")
    )
