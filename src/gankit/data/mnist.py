"""The MNIST family in IDX format (raw or gzip): MNIST, Fashion-MNIST, KMNIST and EMNIST splits."""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GankitError
from .base import ImageSet
from .download import Remote, cache_dir, download, extract_members

_IDX_TYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array, validating its header and size."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise GankitError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise GankitError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise GankitError(f"{path}: truncated IDX file (header incomplete)")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = math.prod(shape)  # exact: numpy's product of four 32-bit sizes can overflow int64
    have = len(raw) - 4 - 4 * ndim
    if have < expected:
        raise GankitError(
            f"{path}: truncated IDX file: header promises {expected} bytes of data, found {have}"
        )
    return np.frombuffer(raw, _IDX_TYPES[raw[2]], count=expected, offset=4 + 4 * ndim).reshape(shape)


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KMNIST = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
EMNIST_ZIP = Remote(
    "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
    "md5:58c8d27c78d21e728a6bc7b3cc06412e",
    "emnist-gzip.zip",
)
EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")
_STD_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IdxSpec:
    """One IDX dataset: its file stem per split, where to download them, and its class names."""

    name: str
    classes: tuple[str, ...]
    remotes: dict[str, Remote] | None = None  # file stem -> remote .gz (None: from EMNIST's zip)
    emnist_split: str | None = None

    def stem(self, split: str, kind: str) -> str:
        base = f"{'train' if split == 'train' else 't10k'}-{kind}"
        stem = f"{base}-idx3-ubyte" if kind == "images" else f"{base}-idx1-ubyte"
        if self.emnist_split:
            return f"emnist-{self.emnist_split}-{stem.replace('t10k', 'test')}"
        return stem


def _remotes(base: str, md5s: tuple[str, ...]) -> dict[str, Remote]:
    return {s: Remote(base + s + ".gz", "md5:" + m) for s, m in zip(_STD_FILES, md5s)}


_DIGITS = tuple("0123456789")
_UPPER = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER = tuple("abcdefghijklmnopqrstuvwxyz")
_MERGED = tuple(c for c in _LOWER if c not in "cijklmopsuvwxyz")
SPECS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        "mnist",
        _DIGITS,
        _remotes(
            _MNIST,
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
    ),
    "fashion-mnist": IdxSpec(
        "fashion-mnist",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        _remotes(
            _FASHION,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
    ),
    "kmnist": IdxSpec(
        "kmnist",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        _remotes(
            _KMNIST,
            (
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
        ),
    ),
}
_EMNIST_CLASSES = {
    "byclass": _DIGITS + _UPPER + _LOWER,
    "bymerge": _DIGITS + _UPPER + _MERGED,
    "balanced": _DIGITS + _UPPER + _MERGED,
    "letters": ("N/A",) + _LOWER,  # letters' labels are 1..26
    "digits": _DIGITS,
    "mnist": _DIGITS,
}
for _split in EMNIST_SPLITS:
    SPECS[f"emnist-{_split}"] = IdxSpec(f"emnist-{_split}", _EMNIST_CLASSES[_split], emnist_split=_split)
SPECS["emnist"] = SPECS["emnist-byclass"]  # what tensorflow-datasets (the seed) calls 'emnist'


def _find(folder: Path, stem: str) -> Path | None:
    for sub in ("", "gzip", "raw"):
        for suffix in ("", ".gz"):
            p = folder / sub / (stem + suffix)
            if p.is_file():
                return p
    return None


def _locate(spec: IdxSpec, stems: list[str], data_dir: Path | None, progress: bool) -> list[Path]:
    if data_dir is not None:
        found = [_find(data_dir, s) for s in stems]
        missing = [s for s, p in zip(stems, found) if p is None]
        if missing:
            raise GankitError(f"--data-dir {data_dir}: no {missing[0]} (or .gz) found for {spec.name}")
        return found  # type: ignore[return-value]
    folder = cache_dir() / spec.name.split("-")[0] if spec.emnist_split else cache_dir() / spec.name
    found = [_find(folder, s) for s in stems]
    if all(found):
        return found  # type: ignore[return-value]
    if spec.emnist_split:
        archive = download(EMNIST_ZIP, cache_dir() / "emnist", progress)
        extract_members(archive, {f"gzip/{s}.gz": folder / f"{s}.gz" for s in stems})
        return [folder / f"{s}.gz" for s in stems]
    return [download(spec.remotes[s], folder, progress) for s in stems]


def load_idx_dataset(
    name: str, split: str = "train", data_dir: str | Path | None = None, progress: bool = True
) -> ImageSet:
    """Load split `train` or `test` of an MNIST-family dataset as an ImageSet (1x28x28 uint8).

    Looks in `data_dir` when given (e.g. /usr/share/datasets/fashion-mnist), else in the cache,
    downloading what is missing.
    """
    spec = SPECS[name]
    stems = [spec.stem(split, "images"), spec.stem(split, "labels")]
    img_path, lbl_path = _locate(spec, stems, Path(data_dir) if data_dir else None, progress)
    return images_from_idx(img_path, lbl_path, spec, f"{name}:{split}")


def images_from_idx(img_path: Path, lbl_path: Path, spec: IdxSpec, source: str) -> ImageSet:
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3:
        raise GankitError(f"{img_path}: expected a 3-d IDX image array, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise GankitError(f"{lbl_path}: {len(labels)} labels for {len(images)} images in {img_path}")
    if labels.max(initial=0) >= len(spec.classes):
        raise GankitError(f"{lbl_path}: label {labels.max()} out of range for {len(spec.classes)} classes")
    t = torch.from_numpy(images.copy())
    if spec.emnist_split:
        t = t.transpose(1, 2).contiguous()  # EMNIST stores each image transposed
    return ImageSet(t.unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), list(spec.classes), source)
