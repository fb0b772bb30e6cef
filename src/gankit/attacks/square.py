"""Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search"): AutoAttack's fourth attack, and the one that needs no gradients.

A random search on the margin loss z_y - max_{i != y} z_i (for a target t: max_{i != t} z_i - z_t):
each query changes one square window of the current perturbation and keeps the change if the loss
fell. The window's side follows the paper's schedule: sqrt(p c h w / c) with p starting at p_init
(0.8) and halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries (rescaled
to the query budget).
- Linf: the start is vertical stripes of +-eps per channel; a window is set to x +- eps (one sign
  per channel).
- L2: the start is a grid of centred "pseudo-Gaussian" patterns of random signs, scaled to eps; a
  query moves the mass of a second window into the first, reshaped by a new pattern, so the norm
  stays eps.

Windows and signs are drawn per query from the attack's seed, the same for every image of a batch
(as the authors' code does), and the start per image from its content: an image attacked alone gets
what it gets in any batch. Images leave the search once misclassified.

    atk = Square(model, eps=8/255, steps=5000)    # steps: queries per image
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import GankitError
from .base import Attack, kept_rows, per_sample_rand, project

# The paper's schedule of p, at fractions of a 10,000-query budget: (upper bound, divisor of p_init).
SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def window_fraction(p_init: float, i: int, queries: int) -> float:
    """p (the fraction of pixels a window covers) at query i of `queries`."""
    it = int(i / queries * 10000)
    for bound, div in SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def _rectangles(a: int, b: int) -> torch.Tensor:
    """An a x b pattern of nested centred rectangles, the k-th weighted 1 / (k + 1)^2, unit L2 norm."""
    d = torch.zeros(a, b)
    r0, c0 = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        d[max(r0 - k, 0) : min(r0 - k + 2 * k + 1, a), max(c0 - k, 0) : min(c0 - k + 2 * k + 1, b)] += (
            1.0 / (k + 1) ** 2
        )
    n = d.norm()
    return d / n if n > 0 else d


def pseudo_gaussian(s: int, transpose: bool) -> torch.Tensor:
    """The L2 attack's s x s pattern: the upper half positive rectangles, the lower half negative."""
    d = torch.zeros(s, s)
    d[: s // 2] = _rectangles(s // 2, s)
    d[s // 2 :] = -_rectangles(s - s // 2, s)
    d = d / d.norm().clamp_min(1e-12)
    return d.t() if transpose else d


class Square(Attack):
    """The Square Attack under the Linf or L2 norm: see the module docstring.

    steps: queries per image (default 5000, AutoAttack's), p_init (0.8), restarts (each on the images
    not yet fooled, from a new start).
    """

    first_step_at_input = False

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 5000,
        norm: str = "linf",
        p_init: float = 0.8,
        restarts: int = 1,
        **kw,
    ):
        super().__init__(model, eps, norm=norm, **kw)
        if steps < 1 or restarts < 1:
            raise GankitError("--steps (queries) and --restarts must be at least 1")
        if not 0.0 < p_init <= 1.0:
            raise GankitError(f"p_init {p_init}: expected a fraction in (0, 1]")
        self.steps, self.p_init, self.restarts = steps, p_init, restarts

    @torch.no_grad()
    def _margin(self, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The margin to push below zero (one forward pass)."""
        z = self.model(x).float()
        key = labels if targets is None else targets
        own = z.gather(1, key[:, None])[:, 0]
        others = z.scatter(1, key[:, None], float("-inf")).amax(1)
        return own - others if targets is None else others - own

    def _start(self, x: torch.Tensor, g: torch.Generator, seed: int) -> torch.Tensor:
        n, c, h, w = x.shape
        r = per_sample_rand(x, seed)
        if self.norm == "linf":
            stripes = torch.where(r[:, :, :1, :] >= 0, 1.0, -1.0).to(
                x.dtype
            )  # one sign per (channel, column)
            return (x + self.eps * stripes).clamp(0.0, 1.0)
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        top, left = (h - 5 * s) // 2, (w - 5 * s) // 2
        for bi in range(h // s):
            for bj in range(w // s):
                vh, vw = top + bi * s, left + bj * s
                if vh < 0 or vw < 0 or vh + s > h or vw + s > w:
                    continue
                pattern = pseudo_gaussian(s, bool(torch.rand((), generator=g) > 0.5)).to(x)
                sign = torch.where(r[:, :, vh, vw] >= 0, 1.0, -1.0).to(x.dtype)[:, :, None, None]
                delta[:, :, vh : vh + s, vw : vw + s] += pattern * sign
        return (x + self.eps * delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(
            0, 1
        )

    def _window_linf(self, x, i: int, g: torch.Generator) -> tuple[tuple, torch.Tensor]:
        """The Linf query's window, an index (the same for every image of the batch), and the
        sign per channel it is set to."""
        _, c, h, w = x.shape
        draws = torch.rand(5 + c, generator=g)  # always as many draws: batch-independent
        s = min(max(round(math.sqrt(window_fraction(self.p_init, i, self.steps) * h * w)), 1), h, w)
        vh, vw = int(draws[0] * (h - s)), int(draws[1] * (w - s))
        sign = torch.where(draws[5:] >= 0.5, 1.0, -1.0).to(x)[None, :, None, None]
        return (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s)), sign

    def _propose(self, x, best, i: int, g: torch.Generator) -> torch.Tensor:
        """One L2 query's candidate for each image of the batch (windows the same for all)."""
        _, c, h, w = x.shape
        draws = torch.rand(5 + c, generator=g)  # always as many draws: batch-independent
        p = window_fraction(self.p_init, i, self.steps)
        side = round(math.sqrt(p * h * w))
        s = max(side, 3)
        s = min(s + (s % 2 == 0), h, w)
        vh, vw = int(draws[0] * (h - s)), int(draws[1] * (w - s))
        vh2, vw2 = int(draws[2] * (h - s)), int(draws[3] * (w - s))
        sign = torch.where(draws[5:] >= 0.5, 1.0, -1.0).to(x)[None, :, None, None]
        delta = best - x
        win = delta[:, :, vh : vh + s, vw : vw + s]
        win_norm = win.pow(2).sum((2, 3), keepdim=True).sqrt()
        mask = torch.zeros_like(x[:1])
        mask[:, :, vh : vh + s, vw : vw + s] = 1.0
        mask[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
        image_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        windows_norm = (delta * mask).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        new = pseudo_gaussian(s, bool(draws[4] > 0.5)).to(x) * sign + win / (win_norm + 1e-12)
        budget = ((self.eps**2 - image_norm**2).clamp_min(0.0) / c + windows_norm**2).sqrt()
        new = new / (new.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-12) * budget
        delta = delta.clone()
        delta[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
        delta[:, :, vh : vh + s, vw : vw + s] = new
        scale = self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + delta * scale).clamp(0.0, 1.0)

    def _one_try(self, x, labels, targets, restart: int):
        seed = self.seed * 1019 + restart
        g = torch.Generator().manual_seed(seed)
        best = project(self._start(x, g, seed), x, self.eps, self.norm)
        margin = self._margin(best, labels, targets)
        # The images still searching, gathered once and compacted only when one is fooled.
        idx = (margin > 0).nonzero()[:, 0]
        xa, ba, ma, ya = x[idx], best[idx], margin[idx], labels[idx]
        ta = None if targets is None else targets[idx]
        for i in range(1, self.steps):
            if not len(idx):
                break
            if self.norm == "linf":
                # The query differs from the current point in one window only: write it in place,
                # evaluate, and put the old window back where the loss did not fall. No full-size
                # pass per query (and no projection: x +- eps clamped to the box is in the ball).
                # An image whose window already holds those values cannot improve and is not
                # evaluated: on an MNIST network, half the images in the last fifth of the queries
                # (one-pixel windows), a third before.
                win, sign = self._window_linf(xa, i, g)
                old = ba[win].clone()
                new = (xa[win] + self.eps * sign).clamp(0.0, 1.0)
                changed = (new != old).flatten(1).any(1)
                ba[win] = new
                if bool(changed.all()):
                    m = self._margin(ba, ya, ta)
                else:
                    m, sub = ma.clone(), changed.nonzero()[:, 0]
                    if len(sub):
                        m[sub] = self._margin(*kept_rows(sub, ba, ya, ta))
                better = m < ma
                ba[win] = torch.where(better.view(-1, 1, 1, 1), new, old)
            else:
                cand = project(self._propose(xa, ba, i, g), xa, self.eps, self.norm)
                m = self._margin(cand, ya, ta)
                better = m < ma
                ba = torch.where(better.view(-1, 1, 1, 1), cand, ba)
            ma = torch.where(better, m, ma)
            done = ma <= 0
            if done.any():
                best[idx], margin[idx] = ba, ma
                keep = ~done
                idx, xa, ba, ma, ya, ta = kept_rows(keep, idx, xa, ba, ma, ya, ta)
        best[idx], margin[idx] = ba, ma
        return best, margin

    def perturb(self, x, labels, targets):
        if labels is None:
            with torch.no_grad():
                labels = self.model(x).argmax(1)
        out = x.clone()
        margin = torch.full((len(x),), float("inf"), device=x.device)
        for r in range(self.restarts):
            idx = (margin > 0).nonzero()[:, 0]
            if not len(idx):
                break
            adv, m = self._one_try(x[idx], labels[idx], None if targets is None else targets[idx], r)
            better = m < margin[idx]
            out[idx[better]] = adv[better]
            margin[idx[better]] = m[better]
        return out, labels
