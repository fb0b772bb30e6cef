"""Gradient-sign attacks: FGSM, BIM / I-FGSM, PGD (Linf and L2, random start, restarts), MI-FGSM."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GankitError
from .base import Attack, per_sample_rand, per_sample_uniform, project


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015), the seed's attack: one step of size eps
    along the sign of the loss gradient; under the L2 norm the fast gradient method, a step of L2
    size eps along the gradient."""

    def perturb(self, x, labels, targets):
        _, grad, _, labels = self.loss_and_grad(x, labels, targets)
        if self.norm == "linf":
            return x + self.eps * grad.sign(), labels
        return x + self.eps * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1), labels


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018) under the Linf or L2 norm.

    steps of size `alpha` (default 2.5 * eps / steps), a random start inside the ball, `restarts`
    independent tries keeping, per sample, a successful one or else the one with the highest loss.
    `early_stop` freezes samples as soon as they are misclassified (or reach their target).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        **kw,
    ):
        super().__init__(model, eps, norm=norm, **kw)
        if steps < 1 or restarts < 1:
            raise GankitError("--steps and --restarts must be at least 1")
        self.steps, self.restarts, self.random_start = steps, restarts, random_start
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / steps
        if self.alpha <= 0 and self.eps > 0:
            raise GankitError(f"--alpha {alpha}: expected a positive step size")

    def _start(self, x: torch.Tensor, restart: int) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        seed = self.seed * 1009 + restart
        if self.norm == "linf":
            return project(x + self.eps * per_sample_rand(x, seed), x, self.eps, "linf")
        d = per_sample_rand(x, seed, "normal")
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        radius = per_sample_uniform(x, seed + 7).view(-1, 1, 1, 1)  # uniform in [0, 1), one per sample
        return project(x + self.eps * radius * d, x, self.eps, "l2")

    def _step(self, grad: torch.Tensor, state) -> torch.Tensor:
        if self.norm == "linf":
            return self.alpha * grad.sign()
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return self.alpha * grad / n

    @property
    def first_step_at_input(self) -> bool:
        return not self.random_start

    def _one_try(self, x, labels, targets, restart, score: bool):
        adv = self._start(x, restart)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        state = None
        for _ in range(self.steps):
            loss, grad, logits, labels = self.loss_and_grad(adv, labels, targets)
            if self.early_stop:
                active &= ~self.succeeded(logits, labels, targets)
                if not active.any():
                    break
            step, state = self._update(grad, state)
            new = project(adv + step, x, self.eps, self.norm)
            adv = torch.where(active.view(-1, 1, 1, 1), new, adv) if self.early_stop else new
        if not score:  # a single try needs no final evaluation
            return adv, None, None, labels
        loss, _, logits, _ = self.loss_and_grad(adv, labels, targets)
        return adv, loss, self.succeeded(logits, labels, targets), labels

    def _update(self, grad, state):
        return self._step(grad, state), state

    def perturb(self, x, labels, targets):
        score = self.restarts > 1
        best, best_loss, best_ok, labels = self._one_try(x, labels, targets, 0, score)
        for r in range(1, self.restarts):
            adv, loss, ok, _ = self._one_try(x, labels, targets, r, score)
            best, best_loss, best_ok = self.keep_better(best, best_loss, best_ok, adv, loss, ok)
        return best, labels


class BIM(PGD):
    """Basic Iterative Method / I-FGSM (Kurakin et al. 2017): PGD with no random start, alpha eps/steps."""

    def __init__(self, model: nn.Module, eps: float, alpha: float | None = None, steps: int = 10, **kw):
        kw.setdefault("norm", "linf")
        super().__init__(
            model, eps, alpha if alpha is not None else eps / steps, steps, random_start=False, **kw
        )


class MIFGSM(BIM):
    """Momentum Iterative FGSM (Dong et al. 2018): BIM whose gradient, L1-normalised per sample,
    accumulates with decay `decay`; each step moves alpha (default eps / steps) along the sign of the
    accumulator."""

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        decay: float = 1.0,
        **kw,
    ):
        super().__init__(model, eps, alpha, steps, **kw)
        self.decay = decay

    def _update(self, grad, state):
        g = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        state = g if state is None else self.decay * state + g
        return self._step(state, None), state
