"""Batches drawn from a uint8 tensor held on the training device: no per-sample Python.

The order of epoch `e` is a permutation drawn from a generator seeded with (seed, e), so a resumed
run only needs (epoch, index of the next batch) to continue the exact same sequence.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class InMemoryBatches:
    """Shuffled fixed-size batches (the last partial batch is dropped) of a uint8 NCHW tensor."""

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        labels: torch.Tensor | None = None,
    ):
        self.images = images.to(device)
        self.labels = labels.to(device) if labels is not None else None
        self.batch_size = min(batch_size, len(images))
        self.seed = seed
        self.device = device

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g).to(self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield (uint8 images, labels or None) for batches start.. of `epoch`."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[idx], (self.labels[idx] if self.labels is not None else None)
