"""Stride-1 transposed convolutions on small maps in the frequency domain.

Rule (`applies`): a stride-1, undilated, square-kernel transposed convolution computing in fp32 or bf16
on a CPU map of at most FREQUENCY_MAX_SIDE px a side, where its multiply-adds in the frequency domain
(`_frequency_macs`) are under 1/factor of the direct convolution's, the factor being this machine's
for that dtype (`factor`: measured once per machine where the path crosses over; section
`frequency_conv/<dtype>` of the calibration). Replaces oneDNN's direct transposed convolution. Justified
by benchmarks/bench_frequency_conv.py and the DCGAN rows of benchmarks/run_all.py: DCGAN's 256 -> 128,
5x5 layer at 7 px, forward and backward at batch 512 on the 2-core AMD EPYC Zen 4: fp32 219-235 ms
against oneDNN's 483-489, bf16 106-107 against 272-284.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import calibration
from .machine import best_time
from .settings import current

# The frequency-domain layer must beat the direct kernel by this factor in the calibration to be used.
FREQUENCY_MIN_SPEEDUP = 1.1
# The rule's factor per compute dtype: the path is taken where its multiply-adds are under 1/factor of
# the direct convolution's. These are what $GANKIT_CPU_FREQUENCY_CONV=on (and an unmeasured machine)
# uses; unforced, each machine
# measures its own (`calibrate_frequency_conv`). Set where DCGAN's 256 -> 128, 5x5 layer at 7 px
# crosses over on the 2-core AMD EPYC Zen 4 without AMX (forward + backward, direct vs frequency):
# fp32 near batch 128 (generator: 200 vs 195 ms), bf16 near batch 24 (the layer: batch 16 11-14 vs
# 14-17 ms, 32 22-24 vs 18-19, 64 39-45 vs 24, 128 74-90 vs 39-44), where the fixed cost of the
# kernel's transforms is paid back sooner. The AVX2-only Zen 3 crosses over in fp32 near batch 30.
FREQUENCY_FACTORS = {torch.float32: 4.0, torch.bfloat16: 2.0}
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
# The calibration's layer (DCGAN's) and its two batch sizes per dtype.
_CALIBRATION_LAYER = dict(h=7, w=7, k=5, pad=2, c_in=256, c_out=128)
_CALIBRATION_BATCHES = {"fp32": (32, 256), "bf16": (16, 64)}
# Largest map side it runs on: its transforms are dense matrices of (map pixels x frequencies).
FREQUENCY_MAX_SIDE = 16


def _frequency_sizes(h: int, w: int, k: int, pad: int) -> tuple[int, int, int]:
    """(P, Q, F): the circular size that holds a stride-1 transposed convolution's cropped output
    without wrap-around (the full linear output has h + k - 1 rows, of which rows pad and above are
    kept), and the number of rfft2 frequencies."""
    p, q = h + k - 1 - pad, w + k - 1 - pad
    return p, q, p * (q // 2 + 1)


def _frequency_macs(h: int, w: int, k: int, pad: int, c_in: int, c_out: int, n: int) -> tuple[float, float]:
    """(frequency, direct): the multiply-adds per image and channel pair of a stride-1 transposed
    convolution in the frequency domain (4 per frequency, the map's and the output's transforms, the
    kernel's transforms shared by the batch of n) and directly (map pixels x kernel taps)."""
    _, _, nf = _frequency_sizes(h, w, k, pad)
    frequency = 4 * nf + 2 * nf * h * w / c_out + 2 * nf * h * w / c_in + 8 * nf * k * k / n
    return frequency, h * w * k * k


def applies(layer: nn.ConvTranspose2d, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether `layer` (on the CPU, computing in `dtype`) runs in the frequency domain: a stride-1,
    undilated, square-kernel layer computing in fp32 or bf16 (under CPU autocast, or a bf16 input and
    weight) on a map of at most FREQUENCY_MAX_SIDE px a side, where its multiply-adds in the frequency
    domain (`_frequency_macs`) are under 1/factor of the direct convolution's, the factor being this
    machine's for that dtype (`factor`: measured once per machine, where the path
    crosses over). DCGAN's 256 -> 128, 5x5 layer at 7 px: 231 + 9,000 / batch against 1,225, so with
    the factors of the AMD EPYC Zen 4 (fp32 4, bf16 2) fp32 from batch ~120 (the seed's 512) and bf16
    from batch ~24 (the demo's 64); on the AVX2-only Zen 3 (measured factor 2.0-2.2) fp32 from batch ~25."""
    k = layer.kernel_size[0]
    n, (h, w) = x.shape[0], x.shape[-2:]
    if (
        layer.stride != (1, 1)
        or layer.dilation != (1, 1)
        or layer.kernel_size != (k, k)
        or layer.padding[0] != layer.padding[1]
        or layer.padding[0] >= k
        or tuple(layer.output_padding) != (0, 0)
        or max(h, w) > FREQUENCY_MAX_SIDE
        or dtype not in FREQUENCY_FACTORS
        or not (torch.is_autocast_enabled("cpu") or x.dtype == layer.weight.dtype == dtype)
    ):
        return False
    frequency, direct = _frequency_macs(h, w, k, layer.padding[0], layer.in_channels, layer.out_channels, n)
    f = factor(dtype)
    return f > 0 and f * frequency < direct


def factor(dtype: torch.dtype = torch.float32) -> float:
    """The factor of `applies`' rule on this machine for layers computing in `dtype`, 0.0 where the
    frequency domain never pays: FREQUENCY_FACTORS' under `$GANKIT_CPU_FREQUENCY_CONV=on`, else this
    machine's calibration (section `frequency_conv/<dtype>`, `calibrate`: 1-3 s a dtype on the 2-core
    Zen 4, ~6 s in fp32 on the AVX2-only Zen 3). A dtype no layer computes in is never measured (bf16
    on a CPU whose bf16 kernels are emulated would take half a minute). This measurement moves the
    crossover to where each CPU has it (batch ~128 in fp32 on the Zen 4, ~25-30 on the Zen 3) and keeps
    the path off a CPU where it would lose (an AMX CPU's bf16 kernels, say)."""
    if current().forced("frequency_conv"):
        return FREQUENCY_FACTORS[dtype]
    name = _DTYPE_NAMES[dtype]
    return float(
        calibration.entry(
            f"frequency_conv/{name}",
            torch.device("cpu"),
            lambda: calibrate([name])[name],
            lambda e: isinstance(e.get("factor"), (int, float)) and e["factor"] >= 0,
            {"factor": FREQUENCY_FACTORS[dtype]},
            lambda e: (
                f"frequency-domain convolutions in {name}: "
                + (f"from batch ~{e['crossover_batch']:.0f}" if e["factor"] else "off")
                + f" (DCGAN's layer {e['speedup']:.2f}x the direct kernel at batch {e['batch']})"
            ),
        )["factor"]
    )


def calibrate(dtypes=("fp32", "bf16")) -> dict:
    """Time DCGAN's 256 -> 128, 5x5 layer at 7 px (channels-last, forward and backward) as the direct
    kernel and in the frequency domain, here, for each of `dtypes` at two batch sizes
    (`_CALIBRATION_BATCHES`: fp32 32 and 256, bf16 under autocast 16 and 64); return {name: figures}.

    Both paths' times are taken as linear in the batch; the batch where the frequency domain becomes
    FREQUENCY_MIN_SPEEDUP times as fast (`crossover_batch`, at least 1; none where its time per image
    is not that much lower) gives the rule's factor for this machine (`factor`, 0.0 for none): the one
    at which `_frequency_macs` puts this layer's crossover at that batch. Runs with gradients on
    whatever the caller's modes (it may be called from inside a forward pass), on tensors of its own
    generator (the caller's random streams stay)."""
    cl, g, cpu = torch.channels_last, torch.Generator().manual_seed(0), torch.device("cpu")
    c = _CALIBRATION_LAYER
    entry = {}
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        w = (0.02 * torch.randn(c["c_in"], c["c_out"], c["k"], c["k"], generator=g)).contiguous(
            memory_format=cl
        )
        w.requires_grad_()
        for dtype, name in _DTYPE_NAMES.items():
            if name not in dtypes:
                continue
            start, times = time.perf_counter(), []
            for batch in _CALIBRATION_BATCHES[name]:
                x = torch.randn(batch, c["c_in"], c["h"], c["w"], generator=g).to(dtype)
                gy = torch.randn(batch, c["c_out"], c["h"], c["w"], generator=g).to(dtype)
                x = x.contiguous(memory_format=cl).requires_grad_()
                gy = gy.contiguous(memory_format=cl)

                def step(conv, x=x, gy=gy, dtype=dtype):  # the weight cast each time, as autocast does
                    return lambda: torch.autograd.grad(conv(x, w.to(dtype)), [x, w], gy)

                pad = c["pad"]
                direct = best_time(step(lambda x, wd, pad=pad: F.conv_transpose2d(x, wd, None, 1, pad)), cpu)
                freq = best_time(step(lambda x, wd, pad=pad: conv_transpose2d(x, wd, (pad, pad))), cpu)
                times.append((batch, direct, freq))
            crossover = _crossover_batch(times, FREQUENCY_MIN_SPEEDUP)
            if crossover is None:
                factor = 0.0
            else:
                frequency, direct_macs = _frequency_macs(**c, n=crossover)
                factor = direct_macs / frequency
            (_, d_small, f_small), (batch, d_large, f_large) = times
            entry[name] = {
                "factor": round(factor, 3),
                "crossover_batch": round(crossover, 1) if crossover is not None else None,
                "speedup": round(d_large / f_large, 3),
                "batch": batch,
                "direct_ms": round(1000 * d_large, 2),
                "frequency_ms": round(1000 * f_large, 2),
                "small_batch": times[0][0],
                "small_direct_ms": round(1000 * d_small, 2),
                "small_frequency_ms": round(1000 * f_small, 2),
                "seconds": round(time.perf_counter() - start, 2),
            }
    return entry


def _crossover_batch(times: list[tuple[int, float, float]], speedup: float) -> float | None:
    """From two (batch, direct seconds, frequency seconds) points, each path's time a line in the
    batch: the batch from which direct >= speedup x frequency (at least 1), or None if never."""
    (b0, d0, f0), (b1, d1, f1) = times
    d_slope, f_slope = (d1 - d0) / (b1 - b0), (f1 - f0) / (b1 - b0)
    d_fixed, f_fixed = d0 - d_slope * b0, f0 - f_slope * b0
    if d_slope <= speedup * f_slope:  # not that much faster per image: loses at large batches
        return None
    return max(1.0, (speedup * f_fixed - d_fixed) / (d_slope - speedup * f_slope))


@functools.lru_cache(maxsize=32)
def _dft_matrices(
    h: int, w: int, k: int, pad: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real matrices of the transforms of `frequency_conv_transpose2d`, computed in float64 and stored
    in `dtype`: `din` (2F, h*w) maps a map to its rfft2 on the (P, Q) grid (rows: frequency, then real
    and imaginary part); `dk` (4F, k*k) maps a kernel to the 2 x 2 real blocks [[Re, Im], [-Im, Re]]
    of its spectrum, so that a row vector [Re x, Im x] times the block is [Re xw, Im xw]; `dout`
    (h_out*w_out, 2F) is irfft2 followed by the crop to the layer's output."""
    p, q, nf = _frequency_sizes(h, w, k, pad)
    f64 = torch.float64
    din = torch.view_as_real(torch.fft.rfft2(torch.eye(h * w, dtype=f64).view(-1, h, w), s=(p, q)))
    dk = torch.view_as_real(torch.fft.rfft2(torch.eye(k * k, dtype=f64).view(-1, k, k), s=(p, q)))
    re, im = dk.reshape(k * k, nf, 2).unbind(-1)
    dk = torch.stack([re, im, -im, re], -1)  # (k*k, F, 4)
    unit = torch.view_as_complex(torch.eye(2 * nf, dtype=f64).view(2 * nf, nf, 2))
    h_out, w_out = h + k - 1 - 2 * pad, w + k - 1 - 2 * pad
    out = torch.fft.irfft2(unit.view(2 * nf, p, q // 2 + 1), s=(p, q))[
        :, pad : pad + h_out, pad : pad + w_out
    ]
    return (
        din.reshape(h * w, 2 * nf).t().to(dtype).contiguous(),
        dk.reshape(k * k, 4 * nf).t().to(dtype).contiguous(),
        out.reshape(2 * nf, h_out * w_out).t().to(dtype).contiguous(),
    )


class _FrequencyProduct(torch.autograd.Function):
    """y (N, h_out*w_out, Co) for x (N, h*w, C) (a channels-last map's pixels) and a transposed
    convolution's weight (C, Co, k, k): spectra X = din @ x, per frequency f the complex product of
    the (N, C) spectra with the kernel's (C, Co) spectra as one real GEMM,
    [Re X_f, Im X_f] @ [[Re W_f, Im W_f], [-Im W_f, Re W_f]] = [Re Y_f, Im Y_f], then y = dout @ Y.
    Every product is a (batched) GEMM; the kernel's blocks are built here, not through autograd
    (whose graph of slices and concatenations held ~5 copies of them: +114 MB at batch 64)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, din: torch.Tensor, dk: torch.Tensor, dout: torch.Tensor
    ):
        n, c, c_out, nf = x.shape[0], weight.shape[0], weight.shape[1], din.shape[0] // 2
        kk = weight.shape[2] * weight.shape[3]
        taps = weight.permute(2, 3, 0, 1).reshape(kk, c * c_out)
        blk = (dk @ taps).view(nf, 2, 2, c, c_out).transpose(2, 3).reshape(nf, 2 * c, 2 * c_out)
        spectra = torch.matmul(din, x)  # (N, 2F, C): frequency-major rows, re/im, channels
        y = torch.bmm(spectra.view(n, nf, -1).transpose(0, 1), blk)  # (F, N, 2Co)
        ctx.save_for_backward(spectra, blk, din, dk, dout)
        ctx.kernel = weight.shape[2:]
        return torch.matmul(dout, y.transpose(0, 1).reshape(n, 2 * nf, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        spectra, blk, din, dk, dout = ctx.saved_tensors
        n, nf = spectra.shape[0], blk.shape[0]
        c, c_out = blk.shape[1] // 2, blk.shape[2] // 2
        g = torch.matmul(dout.t(), gy).view(n, nf, -1).transpose(0, 1)  # (F, N, 2Co), a view
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gblk = torch.bmm(spectra.view(n, nf, -1).permute(1, 2, 0), g)  # (F, 2C, 2Co)
            gblk = gblk.view(nf, 2, c, 2, c_out).transpose(2, 3).reshape(4 * nf, c * c_out)
            gw = (dk.t() @ gblk).view(*ctx.kernel, c, c_out).permute(2, 3, 0, 1)
        if ctx.needs_input_grad[0]:
            gspectra = torch.bmm(g, blk.transpose(1, 2))  # (F, N, 2C)
            gx = torch.matmul(din.t(), gspectra.transpose(0, 1).reshape(n, 2 * nf, -1))
        return gx, gw, None, None, None


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """`F.conv_transpose2d(x, weight, None, 1, padding)` for a CPU map of at most 16 px a side, x and
    weight both fp32 or both bf16, computed in the frequency domain: a circular convolution on a grid
    just large enough that the kept output does not wrap, with the DFTs as small dense matrices
    (`_dft_matrices`, in x's dtype) and, per frequency, one real GEMM for the complex channel mixing
    (`_FrequencyProduct`). In bf16 every GEMM reads bf16 and accumulates in fp32, as the direct bf16
    kernel does; the spectra and the kernel's blocks are rounded to bf16 once each.

    For DCGAN's 256 -> 128, 5x5 layer at 7 px that is 45 frequencies instead of 49 x 25
    pixel-taps: ~5x fewer multiply-adds. Forward and backward at batch 512 on the 2-core AMD EPYC
    (channels-last layer): fp32 219-235 ms against oneDNN's 483-489; bf16 106-107 against oneDNN's
    bf16 kernel's 272-284. fp32 equals the direct convolution to rounding (max error ~4e-6 of the
    largest value); bf16 is off by ~4e-3 of the output's norm (the direct bf16 kernel: ~3e-3).
    Returns a channels-last tensor."""
    n, c, h, w = x.shape
    c_out, k, pad = weight.shape[1], weight.shape[-1], padding[0]
    din, dk, dout = _dft_matrices(h, w, k, pad, x.dtype)
    pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view of a channels-last x
    y = _FrequencyProduct.apply(pixels, weight, din, dk, dout)
    h_out, w_out = h + k - 1 - 2 * pad, w + k - 1 - 2 * pad
    return y.view(n, h_out, w_out, c_out).permute(0, 3, 1, 2)
