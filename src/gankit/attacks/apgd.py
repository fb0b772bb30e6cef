"""APGD, Auto-PGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", Algorithm 1): PGD whose step size needs no tuning.

Every sample keeps its own step size, starting at 2 eps. At checkpoints (after 22% of the steps, then
after intervals 3% of the steps shorter each time, never under 6%: for 100 steps at 22, 41, 57, 70,
80, 87, 93 and 99) a sample's step is halved and its search resumes from its best point when
  1. its loss rose in at most `rho` (0.75) of the steps since the last checkpoint, or
  2. its step was not halved at the last checkpoint and its best loss has not improved since.
Each update moves 0.75 of the way to the projected gradient step plus 0.25 of the previous update
(momentum; the first update is the plain step).

Losses: `ce` (cross-entropy) or `dlr`, the difference of logits ratio
    DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3),
invariant to shifts and rescalings of the logits, so it still gives gradients where the softmax is
saturated. With targets: -CE towards the target, or the targeted DLR
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).

APGD-T (`APGDT`) runs the targeted DLR loss towards each of the classes ranked 2nd to 10th by the
clean logits in turn, on the images no earlier target fooled: AutoAttack's second attack.

    atk = APGD(model, eps=8/255, steps=100, loss="dlr")
    adv = atk(images)                  # (N, C, H, W) in [0, 1], inside the Linf ball
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GankitError
from .base import Attack, kept_rows, per_sample_rand, project

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iteration counts (1-based) after which APGD checks each sample's progress."""
    k, least, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, at = [], k
    while at <= steps:
        out.append(at)
        k = max(k - shrink, least)
        at += k
    return out


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample DLR loss to *increase* (untargeted), or its targeted form towards `targets`."""
    z = logits.float()
    top = z.sort(dim=1, descending=True).values
    zy = z.gather(1, labels[:, None])[:, 0]
    if targets is None:
        others = z.scatter(1, labels[:, None], float("-inf")).amax(1)
        return -(zy - others) / (top[:, 0] - top[:, 2] + 1e-12)
    zt = z.gather(1, targets[:, None])[:, 0]
    return -(zy - zt) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


class APGD(Attack):
    """Auto-PGD (Croce and Hein 2020) under the Linf or L2 norm: see the module docstring.

    steps (default 100), loss `ce` or `dlr`, rho (0.75), restarts (independent random starts; per
    sample a success is kept, else the try with the highest loss), eot (gradients averaged over this
    many forward passes, for randomised models: AutoAttack's `rand` version uses 20). The result is,
    per sample, the last iterate that was misclassified (or reached the target) if any, else the
    highest-loss point. With `early_stop` a sample leaves the batch at its first success (the first
    misclassified iterate is returned): the same images are fooled, for less work.
    """

    first_step_at_input = False

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 100,
        norm: str = "linf",
        loss: str = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        eot: int = 1,
        **kw,
    ):
        super().__init__(model, eps, norm=norm, **kw)
        if loss not in LOSSES:
            raise GankitError(f"--loss {loss!r}: expected one of {', '.join(LOSSES)}")
        if steps < 1 or restarts < 1 or eot < 1:
            raise GankitError("--steps, --restarts and eot must be at least 1")
        if not 0.0 < rho < 1.0:
            raise GankitError(f"rho {rho}: expected a fraction in (0, 1)")
        self.steps, self.loss, self.restarts, self.rho = steps, loss, restarts, rho
        self.eot = eot

    # -- pieces -----------------------------------------------------------------------------------
    def per_sample_loss(self, logits, labels, targets):
        if self.loss == "ce":
            return super().per_sample_loss(logits, labels, targets)
        if logits.shape[1] < (4 if targets is not None else 3):
            raise GankitError(f"--loss dlr needs at least {4 if targets is not None else 3} classes")
        return dlr_loss(logits, labels, targets)

    def loss_and_grad(self, adv, labels, targets):
        if self.eot == 1:
            return super().loss_and_grad(adv, labels, targets)
        # Expectation over transformation: the mean gradient; the loss and logits of the last pass,
        # as the authors' code does it.
        total = None
        for _ in range(self.eot):
            loss, grad, logits, labels = super().loss_and_grad(adv, labels, targets)
            total = grad if total is None else total + grad
        return loss, total / self.eot, logits, labels

    def _start(self, x: torch.Tensor, restart: int) -> torch.Tensor:
        seed = self.seed * 1013 + restart
        t = per_sample_rand(x, seed, "uniform" if self.norm == "linf" else "normal")
        flat = t.flatten(1)
        size = flat.abs().amax(1) if self.norm == "linf" else flat.norm(dim=1)
        return (x + self.eps * t / (size.view(-1, 1, 1, 1) + 1e-12)).clamp(0.0, 1.0)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return adv + step * grad.sign()
        return adv + step * grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)

    # -- one run ----------------------------------------------------------------------------------
    def _one_try(self, x, labels, targets, restart: int, goal="same"):
        """One APGD run from random start number `restart`. `goal`: the targets that count as success
        ("same": `targets`; None: any misclassification, as APGD-T counts it)."""
        goal = targets if isinstance(goal, str) else goal
        view = (-1, 1, 1, 1)
        adv = self._start(x, restart)
        loss, grad, logits = self.loss_and_grad(adv, labels, targets)[:3]
        found = self.succeeded(logits, labels, goal)
        # Per-sample results, full size: the last misclassified iterate, the best point and its loss.
        out_adv, out_best, out_loss, out_found = adv.clone(), adv.clone(), loss.clone(), found.clone()
        # The state of the samples still searching. With early_stop a sample leaves at its first
        # success and the batch is compacted then (only then: on a robust model the loop touches no
        # index); without it every sample runs every step.
        idx = torch.arange(len(x), device=x.device)
        xa, ya, ta, ga = x, labels, targets, goal
        best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
        step = torch.full((len(x), 1, 1, 1), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        previous, adversarial = adv.clone(), adv.clone()
        rises = torch.zeros_like(loss)  # steps since the last checkpoint on which the loss rose
        halved_at_mark = torch.ones(len(x), dtype=torch.bool, device=x.device)
        best_at_mark = best_loss.clone()
        marks, last_mark = set(checkpoints(self.steps)), 0

        def leave(gone):
            nonlocal idx, xa, ya, ta, ga, adv, loss, grad, best, best_loss, best_grad, step
            nonlocal previous, adversarial, rises, halved_at_mark, best_at_mark, found
            at = idx[gone]
            out_adv[at], out_best[at], out_loss[at], out_found[at] = (
                adversarial[gone],
                best[gone],
                best_loss[gone],
                found[gone],
            )
            keep = ~gone
            idx, xa, ya, ta, ga, adv, loss, grad, best, best_loss, best_grad, step = kept_rows(
                keep, idx, xa, ya, ta, ga, adv, loss, grad, best, best_loss, best_grad, step
            )
            previous, adversarial, rises, halved_at_mark, best_at_mark, found = kept_rows(
                keep, previous, adversarial, rises, halved_at_mark, best_at_mark, found
            )

        if self.early_stop and bool(found.any()):
            leave(found)
        for i in range(1, self.steps + 1):
            if not len(idx):
                break
            momentum, previous = adv - previous, adv
            z = project(self._step(adv, grad, step), xa, self.eps, self.norm)
            a = 0.75 if i > 1 else 1.0
            adv = project(adv + a * (z - adv) + (1 - a) * momentum, xa, self.eps, self.norm)
            new_loss, grad, logits = self.loss_and_grad(adv, ya, ta)[:3]
            ok = self.succeeded(logits, ya, ga)
            adversarial = torch.where(ok.view(view), adv, adversarial)
            found = found | ok
            rises += new_loss > loss
            loss = new_loss
            better = loss > best_loss
            best = torch.where(better.view(view), adv, best)
            best_grad = torch.where(better.view(view), grad, best_grad)
            best_loss = torch.where(better, loss, best_loss)
            if i in marks:
                k = i - last_mark
                oscillating = rises <= self.rho * k
                stalled = ~halved_at_mark & (best_at_mark >= best_loss)
                halve = oscillating | stalled
                step = torch.where(halve.view(view), step / 2, step)
                adv = torch.where(halve.view(view), best, adv)
                grad = torch.where(halve.view(view), best_grad, grad)
                halved_at_mark, best_at_mark, last_mark = halve, best_loss.clone(), i
                rises = torch.zeros_like(rises)
            if self.early_stop and bool(ok.any()):
                leave(ok)
        leave(torch.ones_like(found))
        result = torch.where(out_found.view(view), out_adv, out_best)
        return result, out_loss, out_found

    def _labels(self, x, labels):
        if labels is None:
            with torch.no_grad():
                labels = self.model(x).argmax(1)
        return labels

    def perturb(self, x, labels, targets):
        labels = self._labels(x, labels)
        best, best_loss, best_ok = self._one_try(x, labels, targets, 0)
        for r in range(1, self.restarts):
            adv, loss, ok = self._one_try(x, labels, targets, r)
            best, best_loss, best_ok = self.keep_better(best, best_loss, best_ok, adv, loss, ok)
        return best, labels


class APGDT(APGD):
    """APGD-T (Croce and Hein 2020): APGD with the targeted DLR loss (or targeted cross-entropy with
    loss="ce"), run towards each of the `n_targets` (default 9) classes ranked highest by the clean
    logits after the label, in that order, each on the images that no earlier target fooled. Any
    misclassification counts as success. Given explicit targets (`target=`), it is the targeted
    attack towards them and success means reaching them.
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 100, n_targets: int = 9, **kw):
        kw.setdefault("loss", "dlr")
        super().__init__(model, eps, steps, **kw)
        if n_targets < 1:
            raise GankitError(f"n_targets {n_targets}: expected at least 1")
        self.n_targets = n_targets

    def perturb(self, x, labels, targets):
        if targets is not None:
            return super().perturb(x, labels, targets)
        with torch.no_grad():
            logits = self.model(x).float()
        labels = logits.argmax(1) if labels is None else labels
        ranked = logits.scatter(1, labels[:, None], float("-inf")).argsort(1, descending=True)
        adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        for k in range(min(self.n_targets, logits.shape[1] - 1)):
            for r in range(self.restarts):
                idx = (~fooled).nonzero()[:, 0]
                if not len(idx):
                    return adv, labels
                tried, loss, ok = self._one_try(
                    x[idx], labels[idx], ranked[idx, k], k * self.restarts + r, goal=None
                )
                # Keep a success, else the try with the highest loss (losses of different targets
                # are on one scale: DLR is normalised).
                keep = ok | (loss > best_loss[idx])
                adv[idx[keep]] = tried[keep]
                best_loss[idx[keep]] = loss[keep]
                fooled[idx[ok]] = True
        return adv, labels
