"""Decoded-image cache for image folders larger than the memory budget.

A folder whose decoded uint8 images exceed `$GANKIT_MEMORY_BUDGET` bytes (default 4 GiB) is decoded
once, in parallel threads, into a file under `<cache>/decoded/` (a raw uint8 array of shape
(N, C, size, size), written under a temporary name and renamed when complete) and then used through
a memory map: batches read only their rows, the operating system's page cache keeps what fits, and
the process's own memory stays flat. The file is keyed by the image files' paths, sizes and
modification times, the size and the channels, so a second run (or `gankit evaluate`) starts at once
and an edited folder is decoded again.

The file is flushed to the disk before it is renamed into place and its description written, and the
description records the file's length and a digest of a sample of its rows, checked on every use: a
cache that a power loss or another program left short or zero-filled is decoded again, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..io import fsync_path, write_json_atomic
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


SAMPLED_ROWS = 256  # rows hashed to check a cache file on use (a few MB read, whatever its size)


def _row_sample_digest(path: Path, count: int, row_bytes: int) -> str:
    """sha256 of up to SAMPLED_ROWS rows spread evenly over the file, the first and last included."""
    h = hashlib.sha256(f"{count}:{row_bytes}".encode())
    picks = np.unique(np.linspace(0, count - 1, min(count, SAMPLED_ROWS)).round().astype(np.int64))
    with open(path, "rb") as f:
        for i in picks if count else ():
            f.seek(int(i) * row_bytes)
            h.update(f.read(row_bytes))
    return h.hexdigest()


def _intact(data: Path, meta: Path, row_bytes: int) -> dict | None:
    """The cache's description when the data file still matches it (length and sampled rows)."""
    try:
        info = json.loads(meta.read_text())
        count = int(info["count"])
        if data.stat().st_size != count * row_bytes:
            return None
        if info.get("sample_sha256") != _row_sample_digest(data, count, row_bytes):
            return None
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def decoded_images(
    paths: list[Path], channels: int, size: int, decode_one: Callable[[Path], torch.Tensor | None]
) -> tuple[torch.Tensor, list[int]]:
    """(uint8 tensor of shape (kept, C, size, size) backed by the cache file, indices of the kept
    paths). `decode_one(path)` returns a (C, size, size) uint8 tensor, or None to skip the file."""
    key = cache_key(paths, channels, size)
    folder = cache_dir() / "decoded"
    data, meta = folder / f"{key}.u8", folder / f"{key}.json"
    row_bytes = channels * size * size
    info = _intact(data, meta, row_bytes) if data.is_file() and meta.is_file() else None
    if info is None:
        if meta.exists():
            print(f"gankit: the decoded-image cache {data} is damaged; decoding again", file=sys.stderr)
            meta.unlink(missing_ok=True)
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
            os.truncate(tmp, len(kept) * row_bytes)  # skipped files leave no rows
            fsync_path(tmp)  # on the disk before it has its name: never a named file of zeros
            os.replace(tmp, data)
            fsync_path(folder)
        finally:
            tmp.unlink(missing_ok=True)
        seconds = round(time.perf_counter() - t0, 2)
        info = {
            "count": len(kept),
            "kept": kept,
            "channels": channels,
            "size": size,
            "files": len(paths),
            "sample_sha256": _row_sample_digest(data, len(kept), row_bytes),
        }
        write_json_atomic(meta, {**info, "decode_seconds": seconds}, durable=True)
    # copy-on-write: the tensor is writable for torch, the file is never changed
    rows = np.memmap(data, np.uint8, "c", shape=(info["count"], channels, size, size))
    return torch.from_numpy(rows), info["kept"]
