"""The small real dataset shipped inside the package, so that `gankit demo` runs offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .base import ImageSet
from .mnist import SPECS, IdxSpec, images_from_idx

EMBEDDED = "fashion-mnist-small"


def embedded_dir() -> Path:
    return Path(str(resources.files("gankit") / "data" / "embedded" / EMBEDDED))


def load_embedded(split: str = "train") -> ImageSet:
    """4,000 training / 500 test Fashion-MNIST images, class-balanced (MIT licence, see LICENSE there)."""
    spec: IdxSpec = SPECS["fashion-mnist"]
    prefix = "train" if split == "train" else "t10k"
    folder = embedded_dir()
    return images_from_idx(
        folder / f"{prefix}-images-idx3-ubyte.gz",
        folder / f"{prefix}-labels-idx1-ubyte.gz",
        spec,
        f"{EMBEDDED}:{split}",
    )
