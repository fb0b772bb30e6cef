"""FAB, the Fast Adaptive Boundary attack (Croce and Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), in its targeted form FAB-T: AutoAttack's third attack.

For a target class t, the decision boundary between the label y and t is linearised at the current
point x1: f(z) = z_t - z_y ~ f(x1) + g.(z - x1), g the gradient of f. Each step projects both x1
and the original image x0 onto that hyperplane, within the [0, 1] box and under the attack's norm
(the smallest move that reaches it), and moves to a convex combination of the two projections,
overshooting by eta:
    x1 <- (1 - a) (x1 + eta d1) + a (x0 + eta d2),   a = min(|d1| / (|d1| + |d2|), alpha_max)
so the search stays near x0. Once x1 is misclassified it is recorded if it is the closest so far and
pulled back towards x0 by beta. The attack looks for the smallest adversarial perturbation; under the
gankit contract an image counts as broken when one is found within eps.

    atk = FAB(model, eps=8/255, steps=100)       # targets: the 9 classes ranked after the label
    adv = atk(images)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GankitError
from .base import Attack, per_sample_rand, project


def project_on_hyperplane(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step d (per row, in the Linf or L2 norm) with w.(p + d) = b and p + d in [0, 1].

    p, w: (N, D); b: (N,). Where the box keeps the hyperplane out of reach, the step that gets
    closest: every coordinate moved as far as the box allows in the helpful direction.

    Both norms reduce to one monotone piecewise-linear equation in a scalar: for Linf, a radius r
    with d_i = s_i min(r, u_i); for L2, a multiplier l with d_i = s_i min(l |w_i|, u_i); u_i the room
    the box leaves coordinate i in the direction s_i = sign(c w_i), c = b - w.p. Sorting the
    breakpoints once solves it exactly (no iterative search).
    """
    c = b - (w * p).sum(1)
    s = torch.sign(c)[:, None] * torch.sign(w)
    aw = w.abs()
    room = torch.where(s > 0, 1.0 - p, p).clamp_min(0.0)  # how far coordinate i can move usefully
    room = torch.where(aw > 0, room, torch.zeros_like(room))
    need = c.abs()
    if norm == "linf":
        # gain(r) = sum_i |w_i| min(r, u_i): breakpoints at u_i, slope the |w| of unsaturated coords.
        knots, order = room.sort(1)
        weight = aw.gather(1, order)
    else:
        # gain(l) = sum_i |w_i| min(l |w_i|, u_i): breakpoints at u_i / |w_i|, slope sum of w_i^2.
        ratio = torch.where(aw > 0, room / aw.clamp_min(1e-30), torch.zeros_like(room))
        knots, order = ratio.sort(1)
        weight = (aw * aw).gather(1, order)
    # Gain reached at each knot k: what the saturated coordinates give plus the slope of the rest.
    sat_gain = torch.cumsum(weight * knots, 1) - weight * knots  # from coordinates before k
    rest = weight.flip(1).cumsum(1).flip(1)  # slope from coordinates k..D-1
    gain_at = sat_gain + rest * knots
    total = gain_at[:, -1:]  # everything saturated
    k = torch.searchsorted(gain_at.contiguous(), need[:, None].contiguous()).clamp(max=knots.shape[1] - 1)
    lam = (need[:, None] - sat_gain.gather(1, k)) / rest.gather(1, k).clamp_min(1e-30)
    reach = total >= need[:, None]
    move = torch.minimum(lam if norm == "linf" else lam * aw, room)
    return s * torch.where(reach, move, room)


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


class FAB(Attack):
    """FAB-T (Croce and Hein 2020) under the Linf or L2 norm: see the module docstring.

    steps (default 100) per target, `n_targets` (default 9) classes ranked highest by the clean
    logits after the label, tried in order on the images not yet broken within eps; restarts: the
    first try starts at the image, later ones at a random point at half the radius (as the authors'
    code); alpha_max 0.1, eta 1.05, beta 0.9. With explicit targets (`target=`) it runs towards them
    and success means reaching them. An image leaves the search once it has an adversarial within eps.
    The result is that adversarial, else the closest misclassified point found, projected into the
    ball, else the last iterate.
    """

    first_step_at_input = False

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 100,
        norm: str = "linf",
        n_targets: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        **kw,
    ):
        super().__init__(model, eps, norm=norm, **kw)
        if steps < 1 or restarts < 1 or n_targets < 1:
            raise GankitError("--steps, --restarts and n_targets must be at least 1")
        self.steps, self.n_targets, self.restarts = steps, n_targets, restarts
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta

    def _boundary(self, x1: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor):
        """f = z_t - z_y at x1 and its gradient (one backward pass for the whole batch)."""
        x1 = x1.detach().requires_grad_(True)
        z = self.model(x1).float()
        f = z.gather(1, targets[:, None])[:, 0] - z.gather(1, labels[:, None])[:, 0]
        (g,) = torch.autograd.grad(f.sum(), x1)
        return f.detach(), g

    def _one_try(self, x0, labels, targets, goal, restart: int):
        """Returns (closest adversarial found, its size; inf where none)."""
        n = len(x0)
        flat0 = x0.flatten(1)
        best = x0.clone()
        best_size = torch.full((n,), float("inf"), device=x0.device, dtype=x0.dtype)
        x1 = x0.clone()
        if restart > 0:
            t = per_sample_rand(
                x0, self.seed * 1021 + restart, "uniform" if self.norm == "linf" else "normal"
            )
            x1 = (x0 + 0.5 * self.eps * t / _size(t, self.norm).view(-1, 1, 1, 1).clamp_min(1e-12)).clamp(
                0, 1
            )
        idx = torch.arange(n, device=x0.device)  # the samples still searching
        for _ in range(self.steps):
            if not len(idx):
                break
            xa, ya, ta = x1[idx], labels[idx], targets[idx]
            f, g = self._boundary(xa, ya, ta)
            w = g.flatten(1)
            b = (w * xa.flatten(1)).sum(1) - f
            d = project_on_hyperplane(
                torch.cat([xa.flatten(1), flat0[idx]]), torch.cat([w, w]), torch.cat([b, b]), self.norm
            )
            d1, d2 = d[: len(idx)], d[len(idx) :]
            a1 = _size(d1, self.norm).clamp_min(1e-8)
            a2 = _size(d2, self.norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)[:, None]
            moved = (
                (xa.flatten(1) + self.eta * d1) * (1 - alpha) + (flat0[idx] + self.eta * d2) * alpha
            ).clamp(0, 1)
            moved = moved.view_as(xa)
            with torch.no_grad():
                hit = self.succeeded(self.model(moved), ya, goal if goal is None else goal[idx])
            size = _size(moved - x0[idx], self.norm)
            closer = hit & (size < best_size[idx])
            best[idx[closer]] = moved[closer]
            best_size[idx[closer]] = size[closer]
            moved[hit] = x0[idx][hit] + (moved[hit] - x0[idx][hit]) * self.beta
            x1[idx] = moved
            idx = idx[best_size[idx] > self.eps * (1 + 1e-6)]
        found = torch.isfinite(best_size)
        return torch.where(found.view(-1, 1, 1, 1), best, x1), best_size

    def perturb(self, x, labels, targets):
        with torch.no_grad():
            logits = self.model(x).float()
        labels = logits.argmax(1) if labels is None else labels
        if targets is not None:
            plans = [(targets, targets)]
        else:
            ranked = logits.scatter(1, labels[:, None], float("-inf")).argsort(1, descending=True)
            plans = [(ranked[:, k], None) for k in range(min(self.n_targets, logits.shape[1] - 1))]
        out = x.clone()
        best_size = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
        for k, (tgt, goal) in enumerate(plans):
            for r in range(self.restarts):
                idx = (best_size > self.eps * (1 + 1e-6)).nonzero()[:, 0]
                if not len(idx):
                    return out, labels
                g = None if goal is None else goal[idx]
                adv, size = self._one_try(x[idx], labels[idx], tgt[idx], g, r)
                keep = size < best_size[idx]
                keep |= ~torch.isfinite(best_size[idx]) & ~torch.isfinite(size) & (k + r == 0)
                out[idx[keep]] = adv[keep]
                best_size[idx[keep]] = size[keep]
        return project(out, x, self.eps, self.norm), labels
