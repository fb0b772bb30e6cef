"""Kernel Inception Distance (Binkowski et al. 2018): an unbiased MMD estimate with the cubic polynomial
kernel, averaged over random subsets (torchmetrics)."""

from __future__ import annotations

import torch

from .registry import GivenFeatures, register_metric

SUBSETS = 100
SUBSET_SIZE = 1000


@register_metric("kid")
def kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """KID mean and standard deviation over 100 subsets of min(1000, |real|, |fake|) samples."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(SUBSET_SIZE, len(real), len(fake))
    metric = KernelInceptionDistance(feature=GivenFeatures(real.shape[1]), subsets=SUBSETS, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the subsets are drawn from torch's global RNG
        mean, std = metric.compute()
    return {"kid": float(mean), "kid_std": float(std)}
