"""Fréchet Inception Distance (Heusel et al. 2017) of two feature sets, with torchmetrics' statistics."""

from __future__ import annotations

import torch

from .registry import GivenFeatures, register_metric


@register_metric("fid")
def fid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2) of the two sets' Gaussian fits (float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]))
    for part in real.split(4096):
        metric.update(part, real=True)
    for part in fake.split(4096):
        metric.update(part, real=False)
    return {"fid": float(metric.compute())}
