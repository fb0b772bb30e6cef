"""What every benchmark shares: the description of the machine a figure was measured on, and a timer.

A result file names its machine with `machine()`: CPU model and kind (vector extensions AVX2, AVX-512,
AVX512-BF16, AMX), cores and threads, torch and Python versions, the device, what `--precision auto`
chooses there, and the date.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable


def machine() -> dict:
    """The machine, as each result file records it."""
    import torch

    from gankit.device import auto_precision, cpu_features, cpu_kind, cpu_model, pick_device

    dev = pick_device("auto")
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_kind": cpu_kind(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
        "auto_precision": auto_precision(dev, quiet=True),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def timed(f: Callable[[], object], n: int = 10) -> float:
    """Mean milliseconds of `n` calls of `f` after two warm-up calls."""
    f()
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1000
