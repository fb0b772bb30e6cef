"""The image history pool of Shrivastava et al. 2017, as the CycleGAN paper uses it (50 images).

The discriminators see a mix of the newest fakes and fakes from earlier steps, which damps the
oscillation of the two players. For each incoming image: while the pool is not full, it is stored and
returned; afterwards, with probability 1/2 a random stored image is returned and replaced by the new
one, otherwise the new image itself is returned.

The pool draws from its own random generator (seeded by the run, saved with it), so that under
torchrun every process can keep the same pool: each step's fakes are gathered from all processes,
queried in rank order with the same draws everywhere, and each process takes back its own rows.
"""

from __future__ import annotations

import torch

from ..engine import distributed


class ImagePool:
    """A fixed-size buffer of past generator outputs (see the module docstring)."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape: the new images, some swapped for older ones. Under
        torchrun the pool is one for all processes (see the module docstring)."""
        if self.size == 0:
            return batch
        rank, n = distributed.rank(), len(batch)
        everyone = distributed.all_gather_cat(batch.detach())
        return self._query(everyone)[rank * n : (rank + 1) * n]

    def _query(self, batch: torch.Tensor) -> torch.Tensor:
        g = self.generator
        out = []
        for img in batch:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=g) < 0.5:
                i = int(torch.randint(0, self.size, (), generator=g))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> dict[str, torch.Tensor]:
        """The stored images as one tensor, for checkpoints (resume continues the same history)."""
        state = {"rng": self.generator.get_state()}
        return {**state, "images": torch.stack(self.images)} if self.images else state

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.images = list(state["images"].unbind(0)) if "images" in state else []
        if "rng" in state:
            self.generator.set_state(state["rng"].cpu())
