"""Convolutions on batches of tiny maps as im2col + one GEMM (and transposed ones as GEMM + col2im).

There the layer is all weights and no pixels (a 512 -> 512, 4x4 layer on a 2x2 map: 8 M weights, 16
outputs per image), and oneDNN's kernels, built for the opposite, spent most of their time converting
weight gradients; the GEMM form was 8-30% faster at 2x2 to 8x8 under bf16 autocast on the AMD EPYC
(docs/guides/performance.md). Two rules: `small_map` (any dtype: N x H x W <= SMALL_MAP_PIXELS, the
inner layers of a U-Net at batch 1 or 2) and `small_map_wide` (fp32, wide layers on maps of at most
SMALL_MAP_IMAGE_PIXELS px, where this machine's calibration found it faster). Replaces oneDNN's direct
convolution. Justified by benchmarks/bench_small_maps.py and the Pix2Pix rows of benchmarks/run_all.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import algorithms

# Batches of input maps with at most this many pixels in all (N x H x W) run as GEMM + im2col/col2im
# on CPU (Conv2d, ConvTranspose2d): weight-bound layers, few outputs per weight.
SMALL_MAP_PIXELS = 128
# In fp32, also layers with at least SMALL_MAP_WIDE_WEIGHTS weights on maps of at most
# SMALL_MAP_IMAGE_PIXELS pixels per image and SMALL_MAP_WIDE_PIXELS in all (the U-Net's 512-channel
# layers at 4 px up to batch 32 and at 2 px up to batch 128, where oneDNN's kernels slow down most),
# where this machine's fp32 calibration measured the GEMM form faster (`gankit.cpu.algorithms`,
# verdict "small_map_wide"; `GANKIT_CPU_SMALL_MAP_WIDE=on|off` forces it). Forward + both gradients,
# fp32, on the
# AMD EPYC Zen 3 (benchmarks/bench_small_maps.py): 1024 -> 512 transposed at 4 px, batch 16: 101 vs
# 170 ms; 512 -> 512 at 4 px, batch 32: 32.0 vs 43.6; at 2 px, batch 64: 23.5 vs 71.5, batch 128:
# 39.4 vs 117.0; a Pix2Pix step at batch 16: 7,584-7,673 vs 7,722-7,744 ms. Not at 8 px (512 -> 512
# at batch 3-16: 0.93-1.05x; CycleGAN's step with its 3-image generator batch there: 2,270-2,278 vs
# 2,239-2,269 ms) nor on narrow layers (DCGAN's 128 -> 64, 5x5 at 7 px, batch 4: 3.1 vs 2.2 ms).
# Under bf16 autocast only SMALL_MAP_PIXELS applies (the rule measured on the AMD EPYC with
# AVX512-BF16); the wider one is not measured there.
SMALL_MAP_WIDE_WEIGHTS = 2**21
SMALL_MAP_IMAGE_PIXELS = 16
SMALL_MAP_WIDE_PIXELS = 512


def applies(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """The `small_map` rule: at most SMALL_MAP_PIXELS input pixels in the batch, any dtype."""
    return x.shape[0] * x.shape[-2] * x.shape[-1] <= SMALL_MAP_PIXELS


def wide_applies(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """The `small_map_wide` rule: fp32, maps of at most SMALL_MAP_IMAGE_PIXELS px and SMALL_MAP_WIDE_PIXELS
    in the batch, at least SMALL_MAP_WIDE_WEIGHTS weights, and this machine's verdict."""
    image_pixels = x.shape[-2] * x.shape[-1]
    return (
        dtype == torch.float32
        and image_pixels <= SMALL_MAP_IMAGE_PIXELS
        and x.shape[0] * image_pixels <= SMALL_MAP_WIDE_PIXELS
        and layer.weight.numel() >= SMALL_MAP_WIDE_WEIGHTS
        and algorithms.verdict("small_map_wide")
    )


def gemm_conv2d(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """`F.conv2d(x, weight, None, stride, padding, dilation)` as im2col (`F.unfold`) + one GEMM, with a
    channels-last output (gankit's Conv2d on small maps, where the layer is all weights and few pixels)."""
    n, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), dilation, padding, stride)  # (N, C*k*k, L)
    # columns in (kh, kw, C) order, the memory order of a channels-last weight: its (out, k*k*C)
    # matrix is then a view (no per-step copy of the weight or of its gradient)
    cols = cols.view(n, -1, kh * kw, out_h * out_w).permute(0, 3, 2, 1).reshape(n, out_h * out_w, -1)
    y = cols @ weight.permute(0, 2, 3, 1).reshape(o, -1).t()  # (N, L, out)
    return y.view(n, out_h, out_w, o).permute(0, 3, 1, 2)  # channels-last, no copy


def gemm_conv_transpose2d(layer: nn.ConvTranspose2d, x: torch.Tensor, output_padding) -> torch.Tensor:
    """`layer`'s transposed convolution of a small map, without bias, as one GEMM + col2im (`F.fold`,
    summed in fp32); a channels-last result."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
    pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    # (Cin, kh*kw*out): a view of a channels-last weight (no per-step copy of it or its gradient)
    cols = pixels @ layer.weight.permute(0, 2, 3, 1).reshape(c, -1)  # (N, h*w, k*k*out); autocast: bf16
    cols = cols.view(n, h * w, kh * kw, layer.out_channels).permute(0, 3, 2, 1)  # (N, out, k*k, h*w)
    y = F.fold(
        cols.reshape(n, -1, h * w).float(),
        (out_h, out_w),
        layer.kernel_size,
        layer.dilation,
        layer.padding,
        layer.stride,
    )
    return y.to(cols.dtype).contiguous(memory_format=torch.channels_last)
