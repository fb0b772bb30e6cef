"""The in-memory image set every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Images as one uint8 tensor (N, C, H, W), optional int64 labels (N,) and class names."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    source: str = ""

    def __post_init__(self):
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, "images must be uint8 NCHW"
        if self.labels is not None:
            assert self.labels.shape == (len(self.images),), "one label per image"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[-1]
