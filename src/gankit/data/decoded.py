"""Decoded-image cache for image folders larger than the memory budget.

A folder whose decoded uint8 images exceed `$GANKIT_MEMORY_BUDGET` bytes (default 4 GiB) is decoded
once, in parallel threads, into a file under `<cache>/decoded/` (a raw uint8 array of shape
(N, C, size, size), written under a temporary name and renamed when complete) and then used through
a memory map: batches read only their rows, the operating system's page cache keeps what fits, and
the process's own memory stays flat. The file is keyed by the image files' paths, sizes and
modification times, the size and the channels, so a second run (or `gankit evaluate`) starts at once
and an edited folder is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..io import write_json_atomic
from .download import cache_dir

DEFAULT_BUDGET = 4 << 30


def memory_budget() -> int:
    """Bytes of decoded images kept in memory before a folder goes through the decoded cache."""
    return int(os.environ.get("GANKIT_MEMORY_BUDGET", DEFAULT_BUDGET))


def cache_key(paths: list[Path], channels: int, size: int) -> str:
    h = hashlib.sha256(f"{channels}:{size}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def decoded_images(
    paths: list[Path], channels: int, size: int, decode_one: Callable[[Path], torch.Tensor | None]
) -> tuple[torch.Tensor, list[int]]:
    """(uint8 tensor of shape (kept, C, size, size) backed by the cache file, indices of the kept
    paths). `decode_one(path)` returns a (C, size, size) uint8 tensor, or None to skip the file."""
    key = cache_key(paths, channels, size)
    folder = cache_dir() / "decoded"
    data, meta = folder / f"{key}.u8", folder / f"{key}.json"
    if not (data.is_file() and meta.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = data.with_name(f".{data.name}.{os.getpid()}.part")
        t0 = time.perf_counter()
        try:
            rows = np.memmap(tmp, np.uint8, "w+", shape=(len(paths), channels, size, size))
            kept: list[int] = []
            with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while it decodes and resizes
                for i, t in enumerate(pool.map(decode_one, paths)):
                    if t is not None:
                        rows[len(kept)] = t.numpy()
                        kept.append(i)
            rows.flush()
            del rows
            os.truncate(tmp, len(kept) * channels * size * size)  # skipped files leave no rows
            os.replace(tmp, data)
        finally:
            tmp.unlink(missing_ok=True)
        seconds = round(time.perf_counter() - t0, 2)
        info = {"count": len(kept), "kept": kept, "channels": channels, "size": size, "files": len(paths)}
        write_json_atomic(meta, {**info, "decode_seconds": seconds})
    info = json.loads(meta.read_text())
    # copy-on-write: the tensor is writable for torch, the file is never changed
    rows = np.memmap(data, np.uint8, "c", shape=(info["count"], channels, size, size))
    return torch.from_numpy(rows), info["kept"]
