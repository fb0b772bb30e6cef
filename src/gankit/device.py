"""Device and precision selection: CUDA, then Apple MPS, then CPU; nothing assumes a GPU.

`--precision auto` is decided by measurement on each machine (`gankit.cpu.precision`); each run
stores what it chose (`TrainConfig.auto_precision`), so a resumed run keeps it.
"""

from __future__ import annotations

import torch

from .cpu.precision import auto_precision
from .errors import GankitError

PRECISIONS = ("auto", "fp32", "bf16")


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
