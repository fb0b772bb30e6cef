"""Faster fp32 convolution algorithms for CPU training at small batches, each taken where this machine
measured it faster (`conv_algorithm_verdicts`).

Winograd (Toom-Cook) convolutions for stride-1 layers:

A stride-1 r x r convolution computed on m x m output tiles as Y = A^T [(G g G^T) . (B^T d B)] A
(Lavin & Gray 2016, "Fast algorithms for convolutional neural networks") needs (m + r - 1)^2
multiply-adds per tile and channel pair instead of m^2 r^2: F(3x3, 4x4) 36 for 9 outputs instead of 144,
F(4x4, 2x2) 25 for 16 instead of 64. The channel mixing stays one GEMM per transform position (a
batched matrix product), the transforms are small dense matrices, and every piece is a torch op, so
autograd gives the input and weight gradients with the same reduced multiply-add counts.

Where it runs (`winograd_pays`): gankit's Conv2d on CPU, fp32, stride 1, many tiles and channels;
there the PatchGAN's 256 -> 512 layer at 32 px, batch 1 (forward and both gradients), took 41-45 ms
against oneDNN's 95-97 on the 2-core AMD EPYC Zen 3 (AVX2, no AVX-512, no AMX). Not used for the 4x4
stride-2 layers: as 2x2 convolutions (the space-to-depth of the input, or one per output phase of a
transposed convolution) by F(4x4, 2x2) they measured 0.3-1.1x oneDNN there, whose direct kernels run
those layers near the machine's matrix-product rate, while the transforms are memory-bound.

The weight gradient of 4x4 stride-2 layers as one GEMM (`strided_conv`): their forward and input
gradient run near that rate in oneDNN, their weight gradient at half of it or less (the U-Net's
1024 -> 256 transposed layer at 16 px: 31 against 77-94 GMAC/s on the Zen 3); as the product of the
pixels with the 4x4 patches of the other side (a strided view and one copy), 1.2-2.7x faster there
for the layer alone.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

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


# "1" or "0" turns each path on or off; unset (or "auto"), whether it runs is measured once per machine
# (`conv_algorithm_verdicts`).
WINOGRAD_ENV = "GANKIT_WINOGRAD"
GEMM_WGRAD_ENV = "GANKIT_GEMM_WGRAD"
SMALL_MAP_WIDE_ENV = "GANKIT_SMALL_MAP_WIDE"
_ENVS = {"winograd": WINOGRAD_ENV, "gemm_wgrad": GEMM_WGRAD_ENV, "small_map_wide": SMALL_MAP_WIDE_ENV}
# Output tile per kernel size: both a 6 x 6 input tile (36 products per tile and channel pair). 5x5
# layers are left to oneDNN: a 64 -> 64 one at 32 px, batch 4, ran 0.75x its speed by F(2x2, 5x5).
WINOGRAD_TILES = {3: 4, 4: 3}
# The path needs this many tiles in the batch (N x tiles per map) and channels on both sides: below
# that the kernel's transform (36 x C x O numbers) is not paid back by the smaller channel products.
WINOGRAD_MIN_TILES = 64
WINOGRAD_MIN_CHANNELS = 64
# The GEMM weight gradient multiplies the pixels of one side (the input of a transposed layer, the
# output gradient of a convolution) with the 4x4 patches of the other, a copy 4x the size of that side:
# it pays where each patch element meets at least this many channels of the pixels' side (that copy
# of the U-Net's 64-channel 128 px map at batch 2-3 takes 2.5-3.1 ms in the Zen 3's step; torch.profiler
# had charged it ~30). Threshold measured in the steps (fp32, ms/step): Pix2Pix 64: 584-585,
# 128: 576-577, 512: 582-585; CycleGAN 128: 2,268, 256: 2,272-2,296, 512: 2,319-2,340. Batches above
# GEMM_WGRAD_MAX_BATCH keep oneDNN's kernel (SSGAN's 100: no faster, 200 MB more).
GEMM_WGRAD_MIN_CHANNELS = 128
GEMM_WGRAD_MAX_BATCH = 8
# A path must beat the direct kernel by this factor in the calibration to be used.
MIN_SPEEDUP = 1.2
# The calibration's layers: the PatchGAN's 256 -> 512, 4x4, stride-1 layer at 32 px, batch 1
# (Winograd); the U-Net's 1024 -> 256 transposed layer at 16 px, batch 1 (its weight gradient).
_CALIBRATION_LAYER = dict(n=1, c_in=256, c_out=512, k=4, size=32, pad=1)
_WGRAD_LAYER = dict(n=1, c_in=1024, c_out=256, size=16)
# ... and the U-Net's 512 -> 512 layer on 2 px maps at batch 64 (`gemm_conv2d`, gankit.nn.layers._small_map).
_SMALL_MAP_LAYER = dict(n=64, c_in=512, c_out=512, size=2)
# machine key -> {path: verdict}, this process
_verdicts: dict[str, dict[str, bool]] = {}


def fp32_outside_autocast(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether `layer` computes on `x` in fp32: both in fp32 and no CPU autocast active."""
    return x.dtype == layer.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def winograd_pays(layer: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether a Conv2d already on the CPU fast path runs by Winograd on `x`: stride 1, undilated,
    square kernel of WINOGRAD_TILES' sizes, symmetric padding, fp32 input and weight outside autocast
    (in bf16 the transforms' rounding would be amplified), at least WINOGRAD_MIN_CHANNELS in and out,
    WINOGRAD_MIN_TILES tiles in the batch, and this machine's calibration found it faster
    (`conv_algorithm_verdicts`). The PatchGAN's 256 -> 512 layer at 32 px qualifies at batch 1."""
    k = layer.kernel_size[0]
    if (
        os.environ.get(WINOGRAD_ENV) == "0"
        or layer.stride != (1, 1)
        or layer.dilation != (1, 1)
        or layer.kernel_size != (k, k)
        or k not in WINOGRAD_TILES
        or layer.padding[0] != layer.padding[1]
        or not fp32_outside_autocast(layer, x)
        or min(layer.in_channels, layer.out_channels) < WINOGRAD_MIN_CHANNELS
    ):
        return False
    m, pad = WINOGRAD_TILES[k], layer.padding[0]
    ho, wo = x.shape[-2] + 2 * pad - k + 1, x.shape[-1] + 2 * pad - k + 1
    if ho < m or wo < m or x.shape[0] * -(-ho // m) * -(-wo // m) < WINOGRAD_MIN_TILES:
        return False
    return conv_algorithm_verdicts()["winograd"]


def gemm_wgrad_pays(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether a Conv2d or ConvTranspose2d already on the CPU fast path runs by `strided_conv`: a 4x4,
    stride-2, padding-1, undilated layer (no output padding), fp32 outside autocast, with at least
    GEMM_WGRAD_MIN_CHANNELS on the pixels' side (the input of a transposed layer, the output of a
    convolution), a batch of at most GEMM_WGRAD_MAX_BATCH, and this machine's calibration found its
    weight gradient faster (`conv_algorithm_verdicts`)."""
    return (
        os.environ.get(GEMM_WGRAD_ENV) != "0"
        and layer.kernel_size == (4, 4)
        and layer.stride == (2, 2)
        and layer.padding == (1, 1)
        and layer.dilation == (1, 1)
        and tuple(getattr(layer, "output_padding", (0, 0))) == (0, 0)
        and fp32_outside_autocast(layer, x)
        and (layer.in_channels if layer.transposed else layer.out_channels) >= GEMM_WGRAD_MIN_CHANNELS
        and x.shape[0] <= GEMM_WGRAD_MAX_BATCH
        and conv_algorithm_verdicts()["gemm_wgrad"]
    )


def conv_algorithm_verdicts(quiet: bool = False) -> dict[str, bool]:
    """{"winograd": ..., "gemm_wgrad": ..., "small_map_wide": ...}: whether each path pays on this
    machine, each forced by its variable (`$GANKIT_WINOGRAD`, `$GANKIT_GEMM_WGRAD`,
    `$GANKIT_SMALL_MAP_WIDE`: 1 or 0), else measured once per machine
    (`gankit.device.machine_key`) by `calibrate_conv_algorithms` (about a second) and cached in
    `<cache>/conv_algorithms.json` beside the precision's measurement, read once per process. A
    data-parallel run's process 0 measures (or reads) them and hands them to the others
    (`set_conv_algorithm_verdicts`)."""
    forced = {name: os.environ.get(env, "auto") for name, env in _ENVS.items()}
    if all(v in ("0", "1") for v in forced.values()):
        return {name: v == "1" for name, v in forced.items()}
    from ..device import cached_measurement, machine_key

    key = machine_key(torch.device("cpu"))
    if key not in _verdicts:

        def valid(entry: dict) -> bool:  # a damaged or older entry is measured again, not trusted
            return all(
                isinstance(entry.get(name), dict) and isinstance(entry[name].get("use"), bool)
                for name in _ENVS
            )

        entry, path = cached_measurement("conv_algorithms.json", key, valid, calibrate_conv_algorithms)
        if path is not None and not quiet:
            w, g, sm = entry["winograd"], entry["gemm_wgrad"], entry["small_map_wide"]
            print(
                f"fp32 convolutions: winograd {'on' if w['use'] else 'off'} (the PatchGAN's 256 -> 512 "
                f"layer {w['speedup']:.2f}x the direct kernel), GEMM weight gradients "
                f"{'on' if g['use'] else 'off'} "
                f"(the U-Net's 1024 -> 256 layer's {g['speedup']:.2f}x), wide layers on tiny maps as GEMM "
                f"{'on' if sm['use'] else 'off'} (512 -> 512 at 2 px, batch 64: {sm['speedup']:.2f}x), "
                f"measured on this cpu in "
                f"{entry['seconds']:.1f} s; cached in {path}",
                file=sys.stderr,
            )
        _verdicts[key] = {name: entry[name]["use"] for name in _ENVS}
    return {
        name: forced[name] == "1" if forced[name] in ("0", "1") else use
        for name, use in _verdicts[key].items()
    }


def set_conv_algorithm_verdicts(verdicts: dict[str, bool]) -> None:
    """Take `verdicts` as this machine's measured ones in this process (see `conv_algorithm_verdicts`)."""
    from ..device import machine_key

    _verdicts[machine_key(torch.device("cpu"))] = dict(verdicts)


def calibrate_conv_algorithms() -> dict:
    """Time each path against oneDNN here (channels-last, fp32, batch 1): Winograd on `_CALIBRATION_LAYER`
    (forward and both gradients), the GEMM weight gradient on `_WGRAD_LAYER` (the weight gradient
    alone), the GEMM convolution on `_SMALL_MAP_LAYER` (forward and both gradients). A path is used
    where it is MIN_SPEEDUP x as fast. Runs with gradients whatever the caller's modes, on tensors of
    its own generator."""
    from ..device import _time

    g, cl, cpu = torch.Generator().manual_seed(0), torch.channels_last, torch.device("cpu")
    start = time.perf_counter()

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).contiguous(memory_format=cl)

    def verdict(direct: float, fast: float) -> dict:
        return {
            "use": direct >= MIN_SPEEDUP * fast,
            "speedup": round(direct / fast, 3),
            "direct_ms": round(1000 * direct, 2),
            "fast_ms": round(1000 * fast, 2),
        }

    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        c = _CALIBRATION_LAYER
        x = randn(c["n"], c["c_in"], c["size"], c["size"]).requires_grad_()
        w = randn(c["c_out"], c["c_in"], c["k"], c["k"], scale=0.02).requires_grad_()
        out = c["size"] + 2 * c["pad"] - c["k"] + 1
        gy = randn(c["n"], c["c_out"], out, out)
        m = WINOGRAD_TILES[c["k"]]
        direct = _time(lambda: torch.autograd.grad(F.conv2d(x, w, None, 1, c["pad"]), [x, w], gy), cpu, 3)
        fast = _time(lambda: torch.autograd.grad(winograd_conv2d(x, w, c["pad"], m), [x, w], gy), cpu, 3)
        entry = {"winograd": verdict(direct, fast)}
        c = _WGRAD_LAYER
        x = randn(c["n"], c["c_in"], c["size"], c["size"])
        w = randn(c["c_in"], c["c_out"], 4, 4, scale=0.02).requires_grad_()
        gy = randn(c["n"], c["c_out"], 2 * c["size"], 2 * c["size"])
        direct = _time(lambda: torch.autograd.grad(F.conv_transpose2d(x, w, None, 2, 1), [w], gy), cpu, 3)
        fast = _time(lambda: torch.autograd.grad(strided_conv(x, w, True), [w], gy), cpu, 3)
        entry["gemm_wgrad"] = verdict(direct, fast)
        c = _SMALL_MAP_LAYER
        x = randn(c["n"], c["c_in"], c["size"], c["size"]).requires_grad_()
        w = randn(c["c_out"], c["c_in"], 4, 4, scale=0.02).requires_grad_()
        gy = randn(c["n"], c["c_out"], c["size"] // 2, c["size"] // 2)
        direct = _time(lambda: torch.autograd.grad(F.conv2d(x, w, None, 2, 1), [x, w], gy), cpu, 3)
        two, one = (2, 2), (1, 1)
        fast = _time(lambda: torch.autograd.grad(gemm_conv2d(x, w, two, one, one), [x, w], gy), cpu, 3)
        entry["small_map_wide"] = verdict(direct, fast)
    entry["seconds"] = round(time.perf_counter() - start, 2)
    return entry
