"""The image history pool of Shrivastava et al. 2017, as the CycleGAN paper uses it (50 images).

The discriminators see a mix of the newest fakes and fakes from earlier steps, which damps the
oscillation of the two players. For each incoming image: while the pool is not full, it is stored and
returned; afterwards, with probability 1/2 a random stored image is returned and replaced by the new
one, otherwise the new image itself is returned.
"""

from __future__ import annotations

import torch


class ImagePool:
    """A fixed-size buffer of past generator outputs (see the module docstring)."""

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape: the new images, some swapped for older ones."""
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> dict[str, torch.Tensor]:
        """The stored images as one tensor, for checkpoints (resume continues the same history)."""
        return {"images": torch.stack(self.images)} if self.images else {}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.images = list(state["images"].unbind(0)) if "images" in state else []
