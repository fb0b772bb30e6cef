"""Datasets by name or path: the MNIST family (IDX), the embedded demo set, and image folders."""

from __future__ import annotations

from pathlib import Path

from ..errors import GankitError
from .base import ImageSet
from .embedded import EMBEDDED, load_embedded
from .images import load_image_folder
from .mnist import SPECS, IdxSpec, images_from_idx, load_idx_dataset
from .transforms import resize_uint8

__all__ = ["ImageSet", "load_dataset", "known_datasets", "EMBEDDED"]


def known_datasets() -> list[str]:
    """Dataset names accepted by --data (besides a path)."""
    return sorted([*SPECS, EMBEDDED])


def is_known_dataset(data: str) -> bool:
    """Whether --data names a built-in dataset (labelled, with a test split) rather than a folder."""
    return data in SPECS or data == EMBEDDED


def stored_as_idx(data: str) -> bool:
    """Whether --data holds MNIST-format (IDX, 28 px) images: a built-in dataset or a folder of IDX
    files, which the unconditional GANs train at 28 px by default (a folder of images at 64 px)."""
    return is_known_dataset(data) or (Path(data).is_dir() and _idx_folder(Path(data)))


def _idx_folder(folder: Path) -> bool:
    return any(folder.glob("train-images-idx3-ubyte*"))


def load_dataset(
    data: str,
    split: str = "train",
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> ImageSet:
    """Load `data` (a known name or a folder) as an in-memory ImageSet.

    MNIST-family sets are 28x28 grayscale and get resized when `image_size` differs; image folders
    are square-cropped and resized to `image_size` (default 64); `channels` converts (1 or 3).
    """
    if data == EMBEDDED:
        ds = load_embedded(split)
    elif data in SPECS:
        ds = load_idx_dataset(data, split, data_dir, progress)
    elif Path(data).exists() or "/" in data or data.startswith("."):
        folder = Path(data)
        if not folder.is_dir():
            raise GankitError(f"--data {data}: {'not a folder' if folder.exists() else 'no such folder'}")
        if _idx_folder(folder):
            spec = IdxSpec(folder.name, tuple(str(i) for i in range(256)))
            prefix = "train" if split == "train" else "t10k"
            img = next(folder.glob(f"{prefix}-images-idx3-ubyte*"), None)
            lbl = next(folder.glob(f"{prefix}-labels-idx1-ubyte*"), None)
            if img is None or lbl is None:
                raise GankitError(f"--data {data}: IDX folder lacks {prefix}-images/labels files")
            ds = images_from_idx(img, lbl, spec, str(folder))
        else:
            return load_image_folder(folder, image_size or 64, channels, skip_bad)
    else:
        raise GankitError(
            f"--data {data!r}: unknown dataset and no such folder; known datasets: "
            f"{', '.join(known_datasets())}"
        )
    if image_size:
        ds.images = resize_uint8(ds.images, image_size)
    if channels and channels != ds.channels:
        ds.images = (
            ds.images.expand(-1, channels, -1, -1).contiguous()
            if channels == 3
            else ds.images.float().mean(1, keepdim=True).round().to(ds.images.dtype)
        )
    return ds
