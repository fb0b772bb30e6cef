"""Winograd (Toom-Cook) convolutions for CPU training at small batches.

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
    u = (g @ weight.permute(2, 3, 1, 0).reshape(r * r, c * o)).view(a * a, c, o)
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


# "1" or "0" turns the Winograd path of gankit's Conv2d on or off; unset (or "auto"), whether it runs
# is measured once per machine (`winograd_verdict`).
WINOGRAD_ENV = "GANKIT_WINOGRAD"
# Output tile per kernel size: both a 6 x 6 input tile (36 products per tile and channel pair). 5x5
# layers are left to oneDNN: a 64 -> 64 one at 32 px, batch 4, ran 0.75x its speed by F(2x2, 5x5).
WINOGRAD_TILES = {3: 4, 4: 3}
# The path needs this many tiles in the batch (N x tiles per map) and channels on both sides: below
# that the kernel's transform (36 x C x O numbers) is not paid back by the smaller channel products.
WINOGRAD_MIN_TILES = 64
WINOGRAD_MIN_CHANNELS = 64
# It must beat the direct kernel by this factor in the calibration to be used.
WINOGRAD_MIN_SPEEDUP = 1.2
# The calibration's layer: the PatchGAN's 256 -> 512, 4x4, stride-1 layer at 32 px, batch 1.
_CALIBRATION_LAYER = dict(n=1, c_in=256, c_out=512, k=4, size=32, pad=1)
# machine key -> verdict, this process
_winograd_verdicts: dict[str, bool] = {}


def winograd_pays(layer: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether a Conv2d already on the CPU fast path runs by Winograd on `x`: stride 1, undilated,
    square kernel of WINOGRAD_TILES' sizes, symmetric padding, fp32 input and weight outside autocast
    (in bf16 the transforms' rounding would be amplified), at least WINOGRAD_MIN_CHANNELS in and out,
    WINOGRAD_MIN_TILES tiles in the batch, and this machine's calibration (`winograd_verdict`) found
    it faster. pix2pix's and CycleGAN's 256 -> 512 PatchGAN layer at 32 px qualifies at batch 1."""
    k = layer.kernel_size[0]
    if (
        os.environ.get(WINOGRAD_ENV) == "0"
        or layer.stride != (1, 1)
        or layer.dilation != (1, 1)
        or layer.kernel_size != (k, k)
        or k not in WINOGRAD_TILES
        or layer.padding[0] != layer.padding[1]
        or x.dtype != torch.float32
        or layer.weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or min(layer.in_channels, layer.out_channels) < WINOGRAD_MIN_CHANNELS
    ):
        return False
    m, pad = WINOGRAD_TILES[k], layer.padding[0]
    ho, wo = x.shape[-2] + 2 * pad - k + 1, x.shape[-1] + 2 * pad - k + 1
    if ho < m or wo < m or x.shape[0] * -(-ho // m) * -(-wo // m) < WINOGRAD_MIN_TILES:
        return False
    return winograd_verdict()


def winograd_verdict(quiet: bool = False) -> bool:
    """Whether the Winograd path pays on this machine: forced by `$GANKIT_WINOGRAD` (1 or 0), else
    measured once per machine (`gankit.device.machine_key`) by `calibrate_winograd` and cached in
    `<cache>/winograd.json` beside the precision's measurement, read once per process. A data-parallel
    run's process 0 measures (or reads) it and hands it to the others (`set_winograd_verdict`)."""
    forced = os.environ.get(WINOGRAD_ENV, "auto")
    if forced in ("0", "1"):
        return forced == "1"
    from ..device import cached_measurement, machine_key

    key = machine_key(torch.device("cpu"))
    if key not in _winograd_verdicts:

        def valid(entry: dict) -> bool:  # a damaged or older entry is measured again, not trusted
            return isinstance(entry.get("speedup"), (int, float)) and isinstance(entry.get("use"), bool)

        entry, path = cached_measurement("winograd.json", key, valid, calibrate_winograd)
        if path is not None and not quiet:
            print(
                f"winograd convolutions in fp32: {'on' if entry['use'] else 'off'} (the PatchGAN's 256 -> "
                f"512 layer {entry['speedup']:.2f}x the direct kernel, measured on this cpu in "
                f"{entry['seconds']:.1f} s; cached in {path})",
                file=sys.stderr,
            )
        _winograd_verdicts[key] = entry["use"]
    return _winograd_verdicts[key]


def set_winograd_verdict(use: bool) -> None:
    """Take `use` as this machine's measured verdict in this process (see `winograd_verdict`)."""
    from ..device import machine_key

    _winograd_verdicts[machine_key(torch.device("cpu"))] = bool(use)


def calibrate_winograd() -> dict:
    """Time the calibration layer (`_CALIBRATION_LAYER`, channels-last, fp32, forward and both
    gradients) directly and by Winograd here; the path is used where it is WINOGRAD_MIN_SPEEDUP x as
    fast. Runs with gradients whatever the caller's modes, on tensors of its own generator."""
    from ..device import _time

    c, g, cl = _CALIBRATION_LAYER, torch.Generator().manual_seed(0), torch.channels_last
    start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        x = torch.randn(c["n"], c["c_in"], c["size"], c["size"], generator=g).contiguous(memory_format=cl)
        w = (0.02 * torch.randn(c["c_out"], c["c_in"], c["k"], c["k"], generator=g)).contiguous(
            memory_format=cl
        )
        x.requires_grad_()
        w.requires_grad_()
        out = c["size"] + 2 * c["pad"] - c["k"] + 1
        gy = torch.randn(c["n"], c["c_out"], out, out, generator=g).contiguous(memory_format=cl)
        m = WINOGRAD_TILES[c["k"]]

        def step(conv):
            return lambda: torch.autograd.grad(conv(), [x, w], gy)

        cpu = torch.device("cpu")
        direct = _time(step(lambda: F.conv2d(x, w, None, 1, c["pad"])), cpu, repeats=3)
        fast = _time(step(lambda: winograd_conv2d(x, w, c["pad"], m)), cpu, repeats=3)
    return {
        "use": direct >= WINOGRAD_MIN_SPEEDUP * fast,
        "speedup": round(direct / fast, 3),
        "direct_ms": round(1000 * direct, 2),
        "winograd_ms": round(1000 * fast, 2),
        "seconds": round(time.perf_counter() - start, 2),
    }
