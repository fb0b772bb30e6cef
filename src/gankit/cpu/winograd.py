"""fp32 stride-1 3x3 and 4x4 convolutions by Winograd (Toom-Cook) minimal filtering.

A stride-1 r x r convolution computed on m x m output tiles as Y = A^T [(G g G^T) . (B^T d B)] A
(Lavin & Gray 2016, "Fast algorithms for convolutional neural networks") needs (m + r - 1)^2
multiply-adds per tile and channel pair instead of m^2 r^2: F(3x3, 4x4) 36 for 9 outputs instead of 144,
F(4x4, 2x2) 25 for 16 instead of 64. The channel mixing stays one GEMM per transform position (a
batched matrix product), the transforms are small dense matrices, and every piece is a torch op, so
autograd gives the input and weight gradients with the same reduced multiply-add counts.

Rule (`applies`): a Conv2d on CPU, fp32 outside autocast (in bf16 the transforms' rounding would be
amplified), stride 1, undilated, square kernel of WINOGRAD_TILES' sizes, symmetric padding, at least
WINOGRAD_MIN_CHANNELS in and out, WINOGRAD_MIN_TILES tiles in the batch, and this machine's calibration
found it faster (`gankit.cpu.algorithms`). Replaces oneDNN's direct convolution. Justified by the
Pix2Pix and CycleGAN fp32 rows of benchmarks/run_all.py: the PatchGAN's 256 -> 512 layer at 32 px,
batch 1 (forward and both gradients), took 41-45 ms against oneDNN's 95-97 on the 2-core AMD EPYC Zen 3
(AVX2, no AVX-512, no AMX). Not used for the 4x4 stride-2 layers: as 2x2 convolutions by F(4x4, 2x2)
they measured 0.3-1.1x oneDNN there, whose direct kernels run those layers near the machine's
matrix-product rate, while the transforms are memory-bound.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import algorithms

# Interpolation points: the usual ones, smallest first (the transforms' error grows with their size).
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)


@functools.lru_cache(maxsize=32)
def winograd_matrices(m: int, r: int, dtype: torch.dtype = torch.float32):
    """(A^T (m, n), G (n, r), B^T (n, n)) of F(m, r), n = m + r - 1, from n - 1 finite points and
    infinity, built in float64: the correlation y_i = sum_j d_(i+j) g_j is the transpose of the
    Toom-Cook linear convolution c = V_n^-1 [(V_m a) . (V_r b)], so A^T = V_m^T, G = V_r and
    B^T = V_n^-T (V_k: the Vandermonde rows p^0 .. p^(k-1) of each point, e_(k-1) for infinity)."""
    n = m + r - 1
    if n - 1 > len(_POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} points; at most {len(_POINTS)} are defined")
    pts = torch.tensor(_POINTS[: n - 1], dtype=torch.float64)

    def vandermonde(k: int) -> torch.Tensor:
        v = torch.zeros(n, k, dtype=torch.float64)
        v[:-1] = pts[:, None] ** torch.arange(k, dtype=torch.float64)
        v[-1, -1] = 1.0
        return v

    at, g, bt = vandermonde(m).t(), vandermonde(r), torch.linalg.inv(vandermonde(n)).t()
    return at.to(dtype).contiguous(), g.to(dtype).contiguous(), bt.to(dtype).contiguous()


@functools.lru_cache(maxsize=32)
def _kron_matrices(m: int, r: int, dtype: torch.dtype):
    at, g, bt = winograd_matrices(m, r, torch.float64)
    return tuple(torch.kron(a, a).to(dtype).contiguous() for a in (at, g, bt))


class _TapsChannelsOutputs(torch.autograd.Function):
    """A channels-last weight (O, C, r, r), in memory (O, r*r*C), as the (r*r*C, O) matrix: one 2-D
    transpose each way, which torch copies in cache-sized blocks (a 4-D permute copies element by
    element: 3.8 against 1.7 ms for the PatchGAN's 256 -> 512 weight on the AMD EPYC Zen 3), and the
    gradient handed back in the weight's own layout (autograd would otherwise copy it once more)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        ctx.shape = weight.shape
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).t().contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # torch ops: differentiable again
        o, c, kh, kw = ctx.shape
        return grad.t().contiguous().view(o, kh, kw, c).permute(0, 3, 1, 2)


def _taps_channels_outputs(weight: torch.Tensor) -> torch.Tensor:
    """(r*r*C, O), rows in (tap row, tap column, channel) order, of a weight (O, C, r, r)."""
    if weight.is_contiguous(memory_format=torch.channels_last):
        return _TapsChannelsOutputs.apply(weight)
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])


def winograd_conv2d_nhwc(x: torch.Tensor, weight: torch.Tensor, m: int) -> torch.Tensor:
    """The valid (unpadded) stride-1 correlation of an NHWC map `x` (N, H, W, C) with `weight`
    (O, C, r, r): (N, H - r + 1, W - r + 1, O), by F(m x m, r x r) on output tiles. Differentiable."""
    n_img, h, w, c = x.shape
    o, r = weight.shape[0], weight.shape[-1]
    ho, wo = h - r + 1, w - r + 1
    th, tw = -(-ho // m), -(-wo // m)
    a = m + r - 1
    at, g, bt = _kron_matrices(m, r, x.dtype)
    # pad the bottom/right so the last tiles are whole; their extra outputs are cropped
    x = F.pad(x, (0, 0, 0, m * tw + r - 1 - w, 0, m * th + r - 1 - h))
    tiles = x.unfold(1, a, m).unfold(2, a, m)  # (N, th, tw, C, a, a), a view
    tiles = tiles.permute(4, 5, 0, 1, 2, 3).reshape(a * a, -1)  # (a*a, N*th*tw*C)
    v = (bt @ tiles).view(a * a, n_img * th * tw, c)
    u = (g @ _taps_channels_outputs(weight).view(r * r, c * o)).view(a * a, c, o)
    y = at @ torch.bmm(v, u).view(a * a, -1)  # (m*m, N*th*tw*O)
    y = y.view(m, m, n_img, th, tw, o).permute(2, 3, 0, 4, 1, 5).reshape(n_img, th * m, tw * m, o)
    return y[:, :ho, :wo]


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, padding: int, m: int) -> torch.Tensor:
    """`F.conv2d(x, weight, None, 1, padding)` by `winograd_conv2d_nhwc`, for x and weight in the same
    dtype; a channels-last result."""
    xh = x.permute(0, 2, 3, 1)
    if padding:
        xh = F.pad(xh, (0, 0, padding, padding, padding, padding))
    y = winograd_conv2d_nhwc(xh, weight, m).permute(0, 3, 1, 2)
    return y.contiguous(memory_format=torch.channels_last)


# Output tile per kernel size: both a 6 x 6 input tile (36 products per tile and channel pair). 5x5
# layers are left to oneDNN: a 64 -> 64 one at 32 px, batch 4, ran 0.75x its speed by F(2x2, 5x5).
WINOGRAD_TILES = {3: 4, 4: 3}
# The path needs this many tiles in the batch (N x tiles per map) and channels on both sides: below
# that the kernel's transform (36 x C x O numbers) is not paid back by the smaller channel products.
WINOGRAD_MIN_TILES = 64
WINOGRAD_MIN_CHANNELS = 64


def applies(layer: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a Conv2d on the CPU runs by Winograd on `x` (the module docstring's rule). The
    PatchGAN's 256 -> 512 layer at 32 px qualifies at batch 1."""
    k = layer.kernel_size[0]
    if (
        dtype != torch.float32
        or layer.stride != (1, 1)
        or layer.dilation != (1, 1)
        or layer.kernel_size != (k, k)
        or k not in WINOGRAD_TILES
        or layer.padding[0] != layer.padding[1]
        or min(layer.in_channels, layer.out_channels) < WINOGRAD_MIN_CHANNELS
    ):
        return False
    m, pad = WINOGRAD_TILES[k], layer.padding[0]
    ho, wo = x.shape[-2] + 2 * pad - k + 1, x.shape[-1] + 2 * pad - k + 1
    if ho < m or wo < m or x.shape[0] * -(-ho // m) * -(-wo // m) < WINOGRAD_MIN_TILES:
        return False
    return algorithms.verdict("winograd")
