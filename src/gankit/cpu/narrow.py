"""Stride-1 'same' convolutions with few output channels (an image-producing last layer).

Forward as one GEMM over channels-last pixels giving tap-major maps, summed into the output by
separable shifted adds (`_scatter_taps`, in fp32); the input gradient by oneDNN's backward-data kernel;
the weight gradient as per-image GEMMs against im2col of the output gradient. oneDNN is poor at 1-3
output channels in the forward and the weight gradient.

Rule (`applies`): a Conv2d on CPU, stride 1, undilated, odd square kernel, padding k // 2, at most
NARROW_MAX_OUT output channels, fp32 or bf16. Replaces oneDNN's convolution. Justified by the SSGAN rows
of benchmarks/run_all.py and benchmarks/bench_interleaved.py --toggle narrow-conv: SSGAN's 128 -> 1,
7x7 layer at 28 px, batch 100, forward + both gradients on the 2-core AMD EPYC (AVX512-BF16, no AMX):
stock layer 86-92 ms in bf16, 150-155 in fp32; this path 30-31 / 39-40. Same weights, same result to
rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NARROW_MAX_OUT = 3


def applies(layer: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> bool:
    k = layer.kernel_size[0]
    return (
        layer.out_channels <= NARROW_MAX_OUT
        and layer.kernel_size == (k, k)
        and k % 2 == 1
        and layer.stride == (1, 1)
        and layer.dilation == (1, 1)
        and layer.padding == (k // 2, k // 2)
    )


def _narrow_taps(weight: torch.Tensor) -> torch.Tensor:
    """(out*k*k, C): row (o, e) holds weight[o, :, k-1-e], the flipped kernel tap e of output o."""
    out, c, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    return weight.flip(2, 3).reshape(out, c, k * k).transpose(1, 2).reshape(out * k * k, c)


def _scatter_taps(cols: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    """col2im of (N, out*k*k, H*W) tap maps, stride 1, 'same' padding, summed in fp32: tap (i, j) of
    pixel p lands on p + (i, j) - k//2. Separable: k shifted adds along x, then k along y; 4-6x faster
    than torch's col2im (`F.fold`) plus the transposing copy it needs, on the AMD EPYC."""
    n, pad = cols.shape[0], k // 2
    taps = cols.view(n, -1, k, k, h, w)
    rows = cols.new_zeros((n, taps.shape[1], k, h, w + 2 * pad), dtype=torch.float32)
    for j in range(k):
        rows[..., j : j + w] += taps[:, :, :, j]
    y = cols.new_zeros((n, taps.shape[1], h + 2 * pad, w + 2 * pad), dtype=torch.float32)
    for i in range(k):
        y[:, :, i : i + h] += rows[:, :, i]
    return y[:, :, pad : pad + h, pad : pad + w]


class _NarrowConv(torch.autograd.Function):
    """y = conv2d(x, weight), stride 1, 'same' padding, for a channels-last CPU `x` and few output
    channels, with each of its three products done the fastest way measured (NarrowConv2d)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # per image (out*k*k, C) @ (C, H*W): x.reshape is a view of channels-last x, and the tap maps
        # come out tap-major, as the shifted adds read them
        cols = torch.matmul(_narrow_taps(weight), x.reshape(n, c, h * w))
        ctx.save_for_backward(x, weight)
        return _scatter_taps(cols, h, w, weight.shape[-1]).to(x.dtype).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        out, k = weight.shape[0], weight.shape[-1]
        gy = gy.to(x.dtype)
        gx = gw = None
        # oneDNN's backward-data kernel: a GEMM on the im2col below made the SSGAN step 1.01x on the AMD
        # EPYC (inside the noise), and oneDNN measured 2-3x faster on another VM of that kind
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                gy, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:  # per image (out*k*k, H*W) @ (H*W, C), summed over the batch
            # im2col of the output gradient as a convolution with one-hot kernels (exact: one non-zero
            # product per output), twice as fast as torch's im2col on CPU
            pick = torch.eye(out * k * k, dtype=gy.dtype).view(out * k * k, out, k, k)
            gcols = F.conv2d(gy, pick, padding=k // 2).reshape(n, out * k * k, h * w)
            gwf = torch.bmm(gcols, x.permute(0, 2, 3, 1).reshape(n, h * w, c)).sum(0, dtype=torch.float32)
            gw = gwf.view(out, k, k, c).permute(0, 3, 1, 2).flip(2, 3).to(weight.dtype)
        return gx, gw


def conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.conv2d(x, weight, None, 1, k // 2)` for a channels-last CPU x, x and weight in one dtype."""
    return _NarrowConv.apply(x, weight)
