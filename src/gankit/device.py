"""Device and precision selection: CUDA, then Apple MPS, then CPU; nothing assumes a GPU.

`--precision auto` is decided by measurement, not by a CPU flag: the first time a machine trains
with it, `calibrate` times a small convolutional training step in fp32 and under bf16 autocast
(about a second; where a matrix product shows bf16 emulated, as on an AVX2-only CPU, its step is not
timed) and bf16 is chosen when it is clearly faster. The result is cached per machine (device, CPU
model and kind, threads, torch version: `machine_key`) in `<cache>/precision.json`, and each run
stores what it chose (`TrainConfig.auto_precision`), so a resumed run keeps it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time

import torch

from .errors import GankitError

PRECISIONS = ("auto", "fp32", "bf16")
# bf16 must beat fp32 by this factor to be chosen: a tie is not worth the rounding.
BF16_MIN_SPEEDUP = 1.1
# A CPU whose bf16 matrix product is under this fraction of fp32's speed has no bf16 kernels (emulated).
BF16_MIN_GEMM_SPEED = 0.5
# Environment override of the measured choice (fp32 or bf16), e.g. for reproducible test runs.
AUTO_ENV = "GANKIT_AUTO_PRECISION"


# Layout of networks and image batches: channels_last (default) or contiguous (NCHW), for measuring.
MEMORY_FORMAT_ENV = "GANKIT_MEMORY_FORMAT"
_MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def memory_format() -> torch.memory_format:
    """The layout the recipes give their networks and image batches: channels-last (NHWC), which
    oneDNN on CPUs and cuDNN's tensor-core kernels run fastest, unless `$GANKIT_MEMORY_FORMAT` is
    `contiguous` (NCHW: the benchmarks' way of measuring the difference)."""
    name = os.environ.get(MEMORY_FORMAT_ENV, "channels_last")
    if name not in _MEMORY_FORMATS:
        raise GankitError(f"{MEMORY_FORMAT_ENV}={name!r}: expected channels_last or contiguous")
    return _MEMORY_FORMATS[name]


# Set to 0 to leave the C allocator as the process has it (see keep_freed_host_memory).
HOST_MEMORY_ENV = "GANKIT_KEEP_HOST_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_host_memory_kept = False


def keep_freed_host_memory() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of handing it back to the OS at once.

    glibc serves every block over 32 MiB (and, by its default dynamic threshold, many smaller ones)
    with a fresh mmap and unmaps it when freed, so each training step or attack step faults all of its
    large activations in again, page by page, and the kernel zeroes each page. Here large blocks come
    from the heap and the heap is trimmed only past 1 GiB free: on the 2-core AMD EPYC an FGSM attack
    on EfficientNet-Lite0 at batch 32 ran 2.5x faster and PGD-10 3x, the DCGAN step at batch 512 5-10%
    (docs/guides/performance.md), for a few percent more peak memory; memory freed inside the heap stays with
    the process for its next step. Process-wide and idempotent; Linux with glibc only (elsewhere a
    no-op); returns whether it is in effect. `GANKIT_KEEP_HOST_MEMORY=0` leaves the allocator alone
    (e.g. under jemalloc or tcmalloc, which need none of this).
    """
    global _host_memory_kept
    if _host_memory_kept:
        return True
    if os.environ.get(HOST_MEMORY_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        # no mmap for blocks (threads' arenas still fall back to it), trim only past 1 GiB
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _host_memory_kept = ok
    return ok


def pick_device(name: str = "auto") -> torch.device:
    """Resolve `auto|cpu|cuda|cuda:N|mps` to an available torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GankitError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GankitError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise GankitError(f"--device {name}: MPS is not available on this machine")
    return dev


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
    process: `machine_key` runs on every forward pass of a layer that may take the frequency-domain
    path (`gankit.nn.layers.frequency_conv_factor`)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    """The vector extensions that decide CPU speed here: AVX-512, AVX512-BF16, AMX."""
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
    """What a precision measurement depends on: the device's model (for a CPU, its kind too: `cpu_kind`),
    threads and torch's version."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{cpu_model()} ({cpu_kind()}) x{torch.get_num_threads()} threads"
    return f"{device.type}|{what}|torch {torch.__version__}"


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


def _time(step, device: torch.device, repeats: int = 5) -> float:
    """Best wall time in seconds of `repeats` calls of `step` after one to warm up, waiting for an
    asynchronous device (CUDA, MPS) to finish each."""
    sync = {"cuda": torch.cuda.synchronize, "mps": torch.mps.synchronize}.get(device.type, lambda: None)
    step()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _gemm_ms(dtype: torch.dtype, n: int = 256) -> float:
    """Best of two n x n matrix products in `dtype` on the CPU, after one to warm up, in ms."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    return 1000 * _time(lambda: a @ b, torch.device("cpu"), repeats=2)


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
        fp32 = _time(_calibration_step(device, None), device)
        bf16 = float("inf")
        if not emulated:
            try:
                bf16 = _time(_calibration_step(device, torch.bfloat16), device)
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


def cached_measurement(name: str, key: str, valid, measure) -> tuple[dict, object]:
    """A measurement of this machine made once and kept in `<cache>/<name>`, a JSON object by machine
    key (`machine_key`): the cached entry where `valid(entry)`, else `measure()`'s, written back (a
    read-only cache only costs the measurement next time). Returns the entry and the file's path when
    it was just measured, None when it came from the cache."""
    from .data.download import cache_dir
    from .io import write_json_atomic

    path = cache_dir() / name
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and valid(entry):
        return entry, None
    cache[key] = entry = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
    except OSError:
        pass
    return entry, path


def auto_precision(device: torch.device, quiet: bool = False) -> str:
    """What `--precision auto` means on `device`: `bf16` or `fp32`, measured once per machine.

    MPS trains in fp32 (no bf16 autocast there). `$GANKIT_AUTO_PRECISION` overrides the measurement.
    """
    forced = os.environ.get(AUTO_ENV)
    if forced:
        if forced not in ("fp32", "bf16"):
            raise GankitError(f"${AUTO_ENV}={forced!r}: expected fp32 or bf16")
        return forced
    if device.type not in ("cpu", "cuda"):
        return "fp32"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32"
    result, path = cached_measurement(
        "precision.json",
        machine_key(device),
        lambda entry: entry.get("precision") in ("fp32", "bf16"),
        lambda: calibrate(device),
    )
    if path is not None and not quiet:
        print(
            f"precision auto: {result['precision']} (bf16 autocast measured {result['bf16_speedup']:.2f}x "
            f"the speed of fp32 on this {device.type} in {result['seconds']:.1f} s; cached in {path})",
            file=sys.stderr,
        )
    return result["precision"]


def resolve_precision(precision: str, device: torch.device, chosen: str | None = None) -> str:
    """`fp32` or `bf16` for a run: `auto` takes `chosen` ("DEVICE_TYPE:PRECISION", what the run
    chose when it started) when it was chosen for this device type, else measures (cached)."""
    if precision not in PRECISIONS:
        raise GankitError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if chosen and chosen.partition(":")[0] == device.type:
        return chosen.partition(":")[2]
    return auto_precision(device)


def autocast_dtype(precision: str, device: torch.device, chosen: str | None = None) -> torch.dtype | None:
    """The autocast dtype for `precision` (`auto` = bf16 where it measured faster), or None for fp32."""
    if resolve_precision(precision, device, chosen) == "fp32":
        return None
    if device.type == "mps":
        raise GankitError("--precision bf16 is not supported on MPS; use fp32")
    return torch.bfloat16
