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


def restore_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    """Load a scheduler's position (its step count) but keep the schedule it was built with.

    The scheduler is built for the run's *current* length; a checkpoint also stores the schedule of
    the length the run had then (LambdaLR saves its factor objects). Restoring that would keep the old
    length: a run resumed with more epochs would train its extra steps at learning rate 0. The
    optimiser's learning rates are then set from the schedule at the restored step (for an unchanged
    length: the same values the checkpoint holds).
    """
    state = dict(state)
    if "lr_lambdas" in state:  # None = keep this factor as built
        state["lr_lambdas"] = [None] * len(state["lr_lambdas"])
    scheduler.load_state_dict(state)
    set_schedule_step(scheduler, scheduler.last_epoch)


def set_schedule_step(scheduler: torch.optim.lr_scheduler.LRScheduler, step: int) -> None:
    """Put a per-step schedule at `step` and give the optimiser the learning rates of that step."""
    scheduler.last_epoch = step
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        groups = scheduler.optimizer.param_groups
        for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(step)
        scheduler._last_lr = [g["lr"] for g in groups]
