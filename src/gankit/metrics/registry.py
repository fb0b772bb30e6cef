"""Metrics of generated images behind a registry: a metric added is one module that registers a
function (real features, fake features, seed) -> {name: value}."""

from __future__ import annotations

from collections.abc import Callable

import torch

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], dict[str, float]]
GENERATIVE_METRICS: dict[str, MetricFn] = {}


def register_metric(name: str):
    """Decorator: make a feature-space metric available to `gankit evaluate` by `name`."""

    def add(fn: MetricFn) -> MetricFn:
        GENERATIVE_METRICS[name] = fn
        return fn

    return add


class GivenFeatures(torch.nn.Module):
    """A pass-through 'feature extractor' for torchmetrics: gankit extracts the features itself
    (batched, cached, bf16 where chosen) and hands them over."""

    def __init__(self, dims: int):
        super().__init__()
        self.num_features = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
