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


class Cyclic:
    """Wong et al. 2020's cyclic schedule: the factor rises linearly from 0 to 1 over the first
    `peak` of `total` steps, then falls linearly to 0 at `total`."""

    def __init__(self, total: int, peak: float = 0.4):
        self.total, self.top = max(1, total), max(1, int(round(max(1, total) * peak)))

    def __call__(self, step: int) -> float:
        if step < self.top:
            return step / self.top
        return max(0.0, (self.total - step) / max(1, self.total - self.top))


class Piecewise:
    """Factor 1, then 0.1 from half of `total` steps and 0.01 from three quarters (Madry et al.,
    Rice et al. 2020)."""

    def __init__(self, total: int):
        self.half, self.three_quarters = max(1, total) // 2, max(1, total) * 3 // 4

    def __call__(self, step: int) -> float:
        return 1.0 if step < self.half else (0.1 if step < self.three_quarters else 0.01)


LR_SCHEDULES = {"cyclic": Cyclic, "piecewise": Piecewise, "linear-decay": ConstantThenLinear}


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, total: int):
    """A per-step LambdaLR of LR_SCHEDULES by name, or None for a constant learning rate."""
    if kind == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LR_SCHEDULES[kind](total))
