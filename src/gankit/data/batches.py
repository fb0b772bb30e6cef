"""Batches drawn from a uint8 tensor held on the training device: no per-sample Python.

The order of epoch `e` is a permutation drawn from a generator seeded with (seed, e), so a resumed
run only needs (epoch, index of the next batch) to continue the exact same sequence. Under torchrun
every process draws the same order and takes its own slice of each global batch (`shard`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..engine import distributed


def cycled_order(n: int, need: int, seed: int) -> torch.Tensor:
    """`need` indices into n items: fresh permutations (from a generator seeded with `seed`) one
    after the other, for a set smaller than the steps that draw from it."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(-(-need // n))])[:need]


class InMemoryBatches:
    """Shuffled fixed-size batches (the last partial batch is dropped) of a uint8 NCHW tensor."""

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        labels: torch.Tensor | None = None,
        shard: tuple[int, int] | None = None,
    ):
        self.images = images.to(device)
        self.labels = labels.to(device) if labels is not None else None
        self.shard = shard or distributed.shard()
        self.batch_size = max(1, min(batch_size, len(images) // self.shard[1]))
        self.seed = seed
        self.device = device

    def __len__(self) -> int:
        return len(self.images) // (self.batch_size * self.shard[1])

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g).to(self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield (uint8 images, labels or None) for batches start.. of `epoch`."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            idx = perm[distributed.shard_rows(b, self.batch_size, self.shard)]
            yield self.images[idx], (self.labels[idx] if self.labels is not None else None)


class SemiSupervisedBatches:
    """Per step: a labelled half-batch (x, y) cycled from the labelled subset, and an unlabelled
    half-batch from the whole pool. An epoch is len(pool) / (2 * half) steps, as the seed counts it
    (its 30 epochs over 60,000 images with a 100-image GAN batch are 18,000 steps)."""

    def __init__(
        self,
        labelled: torch.Tensor,
        labels: torch.Tensor,
        pool: torch.Tensor,
        half: int,
        seed: int,
        device: torch.device,
        shard: tuple[int, int] | None = None,
    ):
        self.labelled, self.labels = labelled.to(device), labels.to(device)
        self.shard = shard or distributed.shard()
        self.pool = InMemoryBatches(pool, half, seed, device, shard=self.shard)
        self.half, self.seed, self.device = half, seed, device
        self.batch_size = 2 * half

    def __len__(self) -> int:
        return max(1, len(self.pool.images) // (self.batch_size * self.shard[1]))

    def _labelled_order(self, epoch: int) -> torch.Tensor:
        seed = self.seed * 1_000_003 + epoch + 7_777_777
        need = len(self) * self.half * self.shard[1]
        return cycled_order(len(self.labelled), need, seed).to(self.device)

    def epoch(self, epoch: int, start: int = 0):
        """Yield (x_labelled uint8, y, x_unlabelled uint8) for steps start.. of `epoch`."""
        order = self._labelled_order(epoch)
        unl = self.pool.epoch(epoch, 0)
        for b in range(len(self)):
            x_unl, _ = next(unl)
            if b < start:
                continue
            idx = order[distributed.shard_rows(b, self.half, self.shard)]
            yield self.labelled[idx], self.labels[idx], x_unl


class MixedBatches:
    """Per step, a fixed number of rows from each of several labelled sources (real labelled images,
    pseudo-labelled ones, generated ones), concatenated. An epoch is one pass over the first source;
    the others are cycled. Each source's order in epoch `e` comes from (seed, e, source) alone, so a
    resumed run continues the same sequence from (epoch, batch)."""

    def __init__(
        self,
        sources: list[tuple[torch.Tensor, torch.Tensor]],
        sizes: list[int],
        seed: int,
        device: torch.device,
        shard: tuple[int, int] | None = None,
    ):
        self.sources = [(x.to(device), y.to(device)) for x, y in sources]
        self.sizes, self.seed, self.device = sizes, seed, device
        self.shard = shard or distributed.shard()
        self.batch_size = sum(sizes)

    def __len__(self) -> int:
        return max(1, len(self.sources[0][0]) // (self.sizes[0] * self.shard[1]))

    def epoch(self, epoch: int, start: int = 0):
        """Yield (uint8 images, labels) for steps start.. of `epoch`."""
        orders = [
            cycled_order(
                len(x), len(self) * size * self.shard[1], self.seed * 1_000_003 + epoch + s * 7_777_777
            ).to(self.device)
            for s, ((x, _), size) in enumerate(zip(self.sources, self.sizes))
        ]
        for b in range(start, len(self)):
            xs, ys = [], []
            for (x, y), size, order in zip(self.sources, self.sizes, orders):
                idx = order[distributed.shard_rows(b, size, self.shard)]
                xs.append(x[idx])
                ys.append(y[idx])
            yield torch.cat(xs), torch.cat(ys)
