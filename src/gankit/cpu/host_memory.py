"""glibc keeps freed tensor memory for reuse instead of unmapping it.

Rule: on by default in every gankit process that trains, attacks or extracts features (Linux with glibc;
elsewhere a no-op). Replaces glibc's default mmap thresholds. Justified by benchmarks/bench_attacks.py
(FGSM 2.5x, PGD-10 3x on EfficientNet-Lite0 at batch 32) and the DCGAN batch-512 row of
benchmarks/run_all.py (5-10%).
"""

from __future__ import annotations

import platform
import sys

from .settings import current

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
    no-op); returns whether it is in effect. `GANKIT_CPU_HOST_MEMORY=off` leaves the allocator alone
    (e.g. under jemalloc or tcmalloc, which need none of this).
    """
    global _host_memory_kept
    if _host_memory_kept:
        return True
    if not current().enabled("host_memory") or not sys.platform.startswith("linux"):
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
