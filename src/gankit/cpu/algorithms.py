"""Whether Winograd, the GEMM weight gradient and wide tiny-map GEMMs beat oneDNN on this machine.

The three fp32 convolution paths are measured together, about a second, once per machine (section
`conv_algorithms` of `gankit.cpu.calibration`): each against oneDNN on the layer its rule was drawn
on, used where it is MIN_SPEEDUP x as fast. `$GANKIT_CPU_<PATH>=on|off` forces one without measuring.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import calibration
from .machine import best_time
from .settings import current

NAMES = ("winograd", "gemm_wgrad", "small_map_wide")
# A path must beat the direct kernel by this factor in the calibration to be used.
MIN_SPEEDUP = 1.2
# The calibration's layers: the PatchGAN's 256 -> 512, 4x4, stride-1 layer at 32 px, batch 1
# (Winograd); the U-Net's 1024 -> 256 transposed layer at 16 px, batch 1 (its weight gradient).
_CALIBRATION_LAYER = dict(n=1, c_in=256, c_out=512, k=4, size=32, pad=1)
_WGRAD_LAYER = dict(n=1, c_in=1024, c_out=256, size=16)
# ... and the U-Net's 512 -> 512 layer on 2 px maps at batch 64 (`gankit.cpu.small_map`).
_SMALL_MAP_LAYER = dict(n=64, c_in=512, c_out=512, size=2)


def verdicts() -> dict[str, bool]:
    """{name: whether it pays here} for NAMES, measured once per machine (or the calibration's default,
    all True, under `$GANKIT_CPU_CALIBRATION=off`)."""
    entry = calibration.entry(
        "conv_algorithms",
        torch.device("cpu"),
        calibrate,
        lambda e: all(isinstance(e.get(n), dict) and isinstance(e[n].get("use"), bool) for n in NAMES),
        {n: {"use": True} for n in NAMES},
        lambda e: (
            "fp32 convolutions: "
            + ", ".join(f"{n} {'on' if e[n]['use'] else 'off'} ({e[n]['speedup']:.2f}x)" for n in NAMES)
        ),
    )
    return {n: entry[n]["use"] for n in NAMES}


def verdict(name: str) -> bool:
    """Whether path `name` runs where its shape rule holds: forced by its setting, else measured."""
    forced = current().forced(name)
    return forced if forced is not None else verdicts()[name]


def calibrate() -> dict:
    """Time each path against oneDNN here (channels-last, fp32, batch 1): Winograd on `_CALIBRATION_LAYER`
    (forward and both gradients), the GEMM weight gradient on `_WGRAD_LAYER` (the weight gradient
    alone), the GEMM convolution on `_SMALL_MAP_LAYER` (forward and both gradients). A path is used
    where it is MIN_SPEEDUP x as fast. Runs with gradients whatever the caller's modes, on tensors of
    its own generator."""
    # the kernels' modules ask `verdict` in their rules: imported here, not at the top, to keep
    # that dependency one-way at import time
    from .small_map import gemm_conv2d
    from .wgrad import strided_conv
    from .winograd import WINOGRAD_TILES, winograd_conv2d

    g, cl, cpu = torch.Generator().manual_seed(0), torch.channels_last, torch.device("cpu")
    start = time.perf_counter()

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).contiguous(memory_format=cl)

    def judged(direct: float, fast: float) -> dict:
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
        direct = best_time(lambda: torch.autograd.grad(F.conv2d(x, w, None, 1, c["pad"]), [x, w], gy), cpu, 3)
        fast = best_time(lambda: torch.autograd.grad(winograd_conv2d(x, w, c["pad"], m), [x, w], gy), cpu, 3)
        entry = {"winograd": judged(direct, fast)}
        c = _WGRAD_LAYER
        x = randn(c["n"], c["c_in"], c["size"], c["size"])
        w = randn(c["c_in"], c["c_out"], 4, 4, scale=0.02).requires_grad_()
        gy = randn(c["n"], c["c_out"], 2 * c["size"], 2 * c["size"])
        direct = best_time(lambda: torch.autograd.grad(F.conv_transpose2d(x, w, None, 2, 1), [w], gy), cpu, 3)
        fast = best_time(lambda: torch.autograd.grad(strided_conv(x, w, True), [w], gy), cpu, 3)
        entry["gemm_wgrad"] = judged(direct, fast)
        c = _SMALL_MAP_LAYER
        x = randn(c["n"], c["c_in"], c["size"], c["size"]).requires_grad_()
        w = randn(c["c_out"], c["c_in"], 4, 4, scale=0.02).requires_grad_()
        gy = randn(c["n"], c["c_out"], c["size"] // 2, c["size"] // 2)
        direct = best_time(lambda: torch.autograd.grad(F.conv2d(x, w, None, 2, 1), [x, w], gy), cpu, 3)
        two, one = (2, 2), (1, 1)
        fast = best_time(lambda: torch.autograd.grad(gemm_conv2d(x, w, two, one, one), [x, w], gy), cpu, 3)
        entry["small_map_wide"] = judged(direct, fast)
    entry["seconds"] = round(time.perf_counter() - start, 2)
    return entry
