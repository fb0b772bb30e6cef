"""What this machine is, as the calibration keys it: CPU model and kind, threads, torch build, devices."""

from __future__ import annotations

import functools
import os
import platform
import time

import torch


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows. Read once per
    process: `machine_key` runs on forward passes that consult the calibration."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    """The vector extensions that decide CPU speed here: AVX2, AVX-512, AVX512-BF16, AMX."""
    flags = set((_cpuinfo("flags") or "").split())
    return {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
    }


@functools.lru_cache(maxsize=1)
def cpu_kind() -> str:
    """The CPU's family and model numbers and the extensions of `cpu_features` it has, e.g. "25/17
    avx2+avx512f+avx512_bf16": what tells apart two CPUs a VM names alike ("AMD EPYC" has been a Zen 3
    with AVX2 only and a Zen 4 with AVX512-BF16 here, 0.14 and 186 GMAC/s in bf16). Read once per
    process."""
    numbers = "/".join(filter(None, (_cpuinfo("cpu family"), _cpuinfo("model\t"))))
    flags = "+".join(name for name, present in cpu_features().items() if present) or "no-avx2"
    return f"{numbers} {flags}".strip()


def machine_key(device: torch.device) -> str:
    """What a measurement depends on: the device's model (for a CPU, its kind too: `cpu_kind`), threads
    and torch's version."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{cpu_model()} ({cpu_kind()}) x{torch.get_num_threads()} threads"
    return f"{device.type}|{what}|torch {torch.__version__}"


def describe() -> dict:
    """The machine as `gankit doctor` prints it."""
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    return {
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "features": cpu_features(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "devices": devices,
        "python": platform.python_version(),
    }


def best_time(step, device: torch.device | None = None, repeats: int = 5) -> float:
    """Best wall time in seconds of `repeats` calls of `step` after one to warm up, waiting for an
    asynchronous device (CUDA, MPS) to finish each."""
    kind = device.type if device is not None else "cpu"
    sync = {"cuda": torch.cuda.synchronize, "mps": torch.mps.synchronize}.get(kind, lambda: None)
    step()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best
