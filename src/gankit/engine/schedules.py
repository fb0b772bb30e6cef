"""Learning-rate schedules that checkpoint cleanly (plain LambdaLR over a picklable-free factor)."""

from __future__ import annotations

import torch


class ConstantThenLinear:
    """Factor 1 for the first `1 - decay_fraction` of `total` steps, then linearly down to 0 at `total`
    (the CycleGAN paper's schedule, by steps)."""

    def __init__(self, total: int, decay_fraction: float = 0.5):
        self.total, self.start = max(1, total), int(round(max(1, total) * (1 - decay_fraction)))

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 1.0
        return max(0.0, (self.total - step) / max(1, self.total - self.start))


def constant_then_linear(optimizer: torch.optim.Optimizer, total: int, decay_fraction: float = 0.5):
    """A per-step LambdaLR: constant LR, then linear decay to zero over the last `decay_fraction`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, ConstantThenLinear(total, decay_fraction))
