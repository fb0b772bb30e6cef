"""What `--precision auto` means on this machine: bf16 autocast where it is clearly faster, else fp32.

Decided by measurement, not by a CPU flag: the first time a machine trains with it, `calibrate` times a
small convolutional training step in fp32 and under bf16 autocast (about a second; where a matrix
product shows bf16 emulated, as on an AVX2-only CPU, its step is not timed) and bf16 is chosen when it
is BF16_MIN_SPEEDUP x as fast. Kept per machine in section `precision` of `gankit.cpu.calibration`
(also for a CUDA device); each run stores what it chose (`TrainConfig.auto_precision`), so a resumed
run keeps it. `$GANKIT_AUTO_PRECISION=fp32|bf16` says it without measuring.
"""

from __future__ import annotations

import time

import torch

from . import calibration
from .machine import best_time, cpu_features, machine_key
from .settings import current

# bf16 must beat fp32 by this factor to be chosen: a tie is not worth the rounding.
BF16_MIN_SPEEDUP = 1.1
# A CPU whose bf16 matrix product is under this fraction of fp32's speed has no bf16 kernels (emulated).
BF16_MIN_GEMM_SPEED = 0.5


def _calibration_step(device: torch.device, dtype: torch.dtype | None):
    """A small GAN-like training step: strided convolutions, batch norm, leaky ReLU, fwd + bwd."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(  # the layer kinds of the recipes' networks, U-Net-like in shape
        torch.nn.Conv2d(3, 64, 4, 2, 1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(64, 128, 4, 2, 1),
        torch.nn.BatchNorm2d(128),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(128, 128, 3, 1, 1),
        torch.nn.InstanceNorm2d(128),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(128, 64, 4, 2, 1),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(64, 3, 4, 2, 1),
        torch.nn.Tanh(),
    ).to(device, memory_format=torch.channels_last)
    x = torch.randn(4, 3, 96, 96, generator=g).to(device, memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = net(x).float().square().mean()
        loss.backward()
        return loss

    return step


def _gemm_ms(dtype: torch.dtype, n: int = 256) -> float:
    """Best of two n x n matrix products in `dtype` on the CPU, after one to warm up, in ms."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    return 1000 * best_time(lambda: a @ b, torch.device("cpu"), repeats=2)


def calibrate(device: torch.device) -> dict:
    """Time the calibration step in fp32 and bf16 here; return the measurement and the choice.

    On a CPU, a 256 x 256 matrix product in each dtype comes first (under a millisecond where bf16 is
    native): where bf16's is under BF16_MIN_GEMM_SPEED of fp32's (kernels emulated in scalar code, as
    on an AVX2-only CPU, 0.14 against 33 GMAC/s), bf16 cannot win and its step, which would take
    seconds, is not timed (`bf16_ms` None, `bf16_speedup` the product's ratio)."""
    t0 = time.perf_counter()
    # The networks' initialisation must not move the caller's random streams (reproducible runs).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        gemm = _gemm_ms(torch.float32) / _gemm_ms(torch.bfloat16) if device.type == "cpu" else None
        emulated = gemm is not None and gemm < BF16_MIN_GEMM_SPEED
        fp32 = best_time(_calibration_step(device, None), device)
        bf16 = float("inf")
        if not emulated:
            try:
                bf16 = best_time(_calibration_step(device, torch.bfloat16), device)
            except RuntimeError:  # no bf16 kernels on this device
                pass
    speedup = gemm if emulated else fp32 / bf16
    return {
        "precision": "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32",
        "bf16_speedup": round(speedup, 3),
        "fp32_ms": round(1000 * fp32, 2),
        "bf16_ms": round(1000 * bf16, 2) if bf16 != float("inf") else None,
        "bf16_gemm_speedup": round(gemm, 3) if gemm is not None else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "machine": machine_key(device),
        "cpu_features": cpu_features() if device.type == "cpu" else None,
    }


def auto_precision(device: torch.device) -> str:
    """What `--precision auto` means on `device`: `bf16` or `fp32`, measured once per machine.

    MPS trains in fp32 (no bf16 autocast there). `$GANKIT_AUTO_PRECISION` says it without measuring;
    under `$GANKIT_CPU_CALIBRATION=off` an unmeasured machine takes fp32.
    """
    forced = current().precision
    if forced:
        return forced
    if device.type not in ("cpu", "cuda"):
        return "fp32"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32"
    return calibration.entry(
        "precision",
        device,
        lambda: calibrate(device),
        lambda e: e.get("precision") in ("fp32", "bf16"),
        {"precision": "fp32"},
        lambda e: (
            f"precision auto: {e['precision']} (bf16 autocast {e['bf16_speedup']:.2f}x the speed of fp32)"
        ),
    )["precision"]
