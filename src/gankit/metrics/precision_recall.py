"""Improved precision and recall (Kynkäänniemi et al. 2019): the share of generated samples inside the
real set's k-NN manifold (precision: quality) and of real samples inside the generated one (recall:
coverage), k = 3."""

from __future__ import annotations

import torch

from .registry import register_metric

K = 3


def _radii(feats: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of each sample to its k-th nearest neighbour in the same set (itself excluded)."""
    out = []
    for part in feats.split(chunk):
        d = torch.cdist(part, feats)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st is the sample itself, at 0
    return torch.cat(out)


def _inside(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query sample: does it fall in at least one ref sample's k-NN ball?"""
    out = []
    for part in query.split(chunk):
        out.append((torch.cdist(part, ref) <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _radii(real, k)).double().mean()
    recall = _inside(real, fake, _radii(fake, k)).double().mean()
    return float(precision), float(recall)


@register_metric("precision_recall")
def precision_and_recall(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Precision and recall with k = 3 (needs more than 3 samples per set)."""
    p, r = precision_recall(real, fake)
    return {"precision": p, "recall": r}
