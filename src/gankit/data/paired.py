"""Paired images for pix2pix: the aligned A|B format, two folders of matching names, and the
standard pix2pix archives by name.

Layouts accepted for `--data FOLDER`:
- `FOLDER/{train,val,test}/*.jpg`, each file A and B side by side (the pix2pix archives);
- `FOLDER/{train,val,test}/{A,B}/` with matching file names (extension may differ);
- either of the above without the split level (then the folder is the training split).

Pairs are decoded once, resized to the load size and kept in memory as uint8 when they fit in
`$GANKIT_MEMORY_BUDGET` bytes (default 4 GiB); otherwise DataLoader workers decode each batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..engine import distributed
from ..errors import GankitError
from .decoded import memory_budget
from .download import Remote, cache_dir, download, extract_archive
from .images import (
    BAD_IMAGE_ERRORS,
    describe_bad_image,
    list_images,
    open_image,
    to_mode,
    uniform_channels,
)

PIX2PIX_URL = "https://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"

# File counts of the published archives, checked after extraction (a truncated or altered archive
# fails here even though it still unpacks).
PIX2PIX_SETS: dict[str, dict[str, int]] = {
    "facades": {"train": 400, "val": 100, "test": 106},
    "cityscapes": {"train": 2975, "val": 500},
    "maps": {"train": 1096, "val": 1098},
    "edges2shoes": {"train": 49825, "val": 200},
    "night2day": {"train": 17823, "val": 10, "test": 2287},
}

# The archives' pinned digests. The publisher lists none; these md5 sums are the ones a public
# pix2pix data loader checks its downloads against.
PIX2PIX_DIGESTS: dict[str, str] = {
    "facades": "md5:e2e25dd517e9d15828416ab329da2854",
    "cityscapes": "md5:32569df708076e427e9cd02abbca7748",
    "maps": "md5:e5f65d26eb288457f5ac056deb94d154",
    "edges2shoes": "md5:71da478b54fedde126e234a2a050bc15",
    "night2day": "md5:fd21b1d447a1f927fed41aabedd85baa",
}


def pix2pix_archive(name: str) -> Remote:
    """The download of a named pix2pix dataset, with its pinned digest."""
    return Remote(PIX2PIX_URL.format(name), PIX2PIX_DIGESTS[name])


# -- archives -----------------------------------------------------------------------------------
def count_split_files(root: Path, counts: dict[str, int]) -> None:
    """Raise GankitError unless root/<split>/ holds exactly the expected number of images."""
    for split, n in counts.items():
        found = len(list_images(root / split)) if (root / split).is_dir() else 0
        if found != n:
            raise GankitError(
                f"{root}: {split}/ holds {found} images, the published archive has {n}; "
                f"delete {root} and its archive to download again"
            )


def fetch_archive_set(
    name: str,
    remote: Remote,
    counts: dict[str, int],
    data_dir: str | None,
    progress: bool = True,
) -> Path:
    """The extracted folder of a named archive dataset (.tar.gz or .zip; pix2pix and CycleGAN sets):
    `data_dir` if given, else the cache (downloading, verifying against the pinned digest and
    extracting on first use), with the published file count of every split folder checked."""
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise GankitError(f"--data-dir {data_dir}: no such folder")
        if (root / name).is_dir() and not any((root / s).is_dir() for s in counts):
            root = root / name
        count_split_files(root, counts)
        return root
    folder = cache_dir() / name
    root = folder / name
    if not root.is_dir():
        archive = download(remote, folder, progress)
        try:
            extract_archive(archive, root)
        except GankitError as e:
            archive.unlink(missing_ok=True)
            raise GankitError(f"{e}; it was removed, run again to download it afresh") from None
    count_split_files(root, counts)
    return root


# -- pairs --------------------------------------------------------------------------------------
@dataclass
class PairList:
    """The files of one split: aligned files (b is None) or matching A/B files."""

    a: list[Path]
    b: list[Path] | None
    source: str
    root: str = ""
    split: str = "all"  # the split folder read (train, val, test), or "all" in a folder without splits

    def __len__(self) -> int:
        return len(self.a)


def split_folder(root: Path, split: str) -> Path | None:
    """root/<split> for train; for evaluation val, then test. None when the folder has no splits."""
    names = [split] if split == "train" else ["val", "test"]
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def list_pairs(root: str | Path, split: str = "train") -> PairList:
    """The pair files of `split` in any accepted layout (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise GankitError(f"--data {root}: no such folder")
    has_splits = any((root / s).is_dir() for s in ("train", "val", "test"))
    folder = split_folder(root, split) if has_splits else root
    if folder is None:
        raise GankitError(f"{root}: no {'train' if split == 'train' else 'val/ or test'}/ folder")
    split_name = folder.name if has_splits else "all"
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        a_files = {p.relative_to(folder / "A").with_suffix(""): p for p in list_images(folder / "A")}
        b_files = {p.relative_to(folder / "B").with_suffix(""): p for p in list_images(folder / "B")}
        lonely = sorted(set(a_files) ^ set(b_files))
        if lonely:
            side, files = ("A", a_files) if lonely[0] in a_files else ("B", b_files)
            other = "B" if side == "A" else "A"
            raise GankitError(
                f"{files[lonely[0]]}: no file of the same name in {folder / other} "
                f"({len(lonely)} unpaired files); paired folders need matching names"
            )
        keys = sorted(a_files)
        return PairList(
            [a_files[k] for k in keys], [b_files[k] for k in keys], str(folder), str(root), split_name
        )
    files = list_images(folder)
    if not files:
        raise GankitError(f"{folder}: no images (expected A|B side-by-side files or A/ and B/ folders)")
    return PairList(files, None, str(folder), str(root), split_name)


def pair_channels(pairs: PairList, skip_bad: bool = False) -> tuple[int, int]:
    """(channels of A, channels of B): see `uniform_channels`; aligned files share one count."""
    a = uniform_channels(pairs.a, "one side of the pairs", skip_bad)
    return (a, a) if pairs.b is None else (a, uniform_channels(pairs.b, "one side of the pairs", skip_bad))


def decode_pair(
    pairs: PairList, i: int, channels: tuple[int, int], size: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair i as two uint8 CHW tensors resized to size x size; GankitError names a bad file."""
    path = pairs.a[i]
    try:
        if pairs.b is None:
            img = open_image(path)
            w, h = img.size
            if w % 2:
                raise GankitError(
                    f"{path}: width {w} is odd; an aligned pair file holds A and B side by side"
                )
            a, b = img.crop((0, 0, w // 2, h)), img.crop((w // 2, 0, w, h))
        else:
            a = open_image(path)
            path = pairs.b[i]
            b = open_image(path)
            if a.size != b.size:
                raise GankitError(
                    f"{path}: {b.size[0]}x{b.size[1]} but its pair {pairs.a[i]} is {a.size[0]}x{a.size[1]}"
                )
    except BAD_IMAGE_ERRORS as e:
        raise GankitError(f"{path}: {describe_bad_image(e)}") from None
    if min(a.size) < crop:
        raise GankitError(
            f"{path}: {a.size[0]}x{a.size[1]} per side is smaller than the {crop} px crop "
            "(use larger images or a smaller --image-size)"
        )
    out = []
    for img, c in zip((a, b), channels):
        img = to_mode(img, c).resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8).reshape(size, size, c)
        out.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
    return out[0], out[1]


def decode_pairs(
    pairs: PairList, channels: tuple[int, int], size: int, crop: int, skip_bad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Decode every pair in parallel: uint8 (N, Ca, size, size), (N, Cb, size, size), kept indices."""

    def one(i):
        try:
            return decode_pair(pairs, i, channels, size, crop)
        except GankitError as e:
            if not skip_bad:
                raise GankitError(f"{e}; pass --skip-bad-images to skip such pairs") from None
            print(f"gankit: skipping {e}", file=sys.stderr)
            return None

    with ThreadPoolExecutor() as pool:
        decoded = list(pool.map(one, range(len(pairs))))
    kept = [i for i, d in enumerate(decoded) if d is not None]
    if not kept:
        raise GankitError(f"{pairs.source}: none of the {len(pairs)} pairs could be used")
    a = torch.stack([decoded[i][0] for i in kept])
    b = torch.stack([decoded[i][1] for i in kept])
    return a, b, kept


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, pairs, channels, size, crop):
        self.pairs, self.channels, self.size, self.crop = pairs, channels, size, crop

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return decode_pair(self.pairs, i, self.channels, self.size, self.crop)


class PairBatches:
    """Shuffled batches of uint8 pairs, in memory on the device when they fit the memory budget,
    else decoded by DataLoader workers. Epoch e's order is a permutation seeded with (seed, e), so a
    resumed run continues the same sequence from (epoch, batch index)."""

    def __init__(
        self,
        pairs: PairList,
        channels: tuple[int, int],
        size: int,
        crop: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        skip_bad: bool = False,
        workers: int | None = None,
        shard: tuple[int, int] | None = None,
    ):
        self.shard = shard or distributed.shard()
        self.batch_size = min(batch_size, len(pairs))
        self.seed, self.device = seed, device
        per_pair = (channels[0] + channels[1]) * size * size
        self.in_memory = per_pair * len(pairs) <= memory_budget()
        if self.in_memory:
            a, b, kept = decode_pairs(pairs, channels, size, crop, skip_bad)
            self.a, self.b, self.n = a.to(device), b.to(device), len(kept)
        else:
            self.dataset = _PairDataset(pairs, channels, size, crop)
            self.n = len(pairs)
            self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        self.batch_size = max(1, min(self.batch_size, self.n // self.shard[1]))

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.shard[1])

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 A, uint8 B) batches start.. of `epoch` (this process's share of each: the
        sampler of folders that do not fit in memory is this per-process list of indices)."""
        r, world = self.shard
        # global batch k = rows [k*B*N, (k+1)*B*N) of the order, in rank order (distributed.shard_rows)
        grid = self.permutation(epoch)[: len(self) * world * self.batch_size].view(
            len(self), world, self.batch_size
        )
        perm = grid[start:, r].reshape(-1)
        if self.in_memory:
            perm = perm.to(self.device)
            for k in range(0, len(perm), self.batch_size):
                idx = perm[k : k + self.batch_size]
                yield self.a[idx], self.b[idx]
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=perm.tolist(),
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        for a, b in loader:
            yield a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True)
