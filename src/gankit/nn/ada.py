"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"): every image the discriminator sees, real or fake, is augmented with probability
p per transform, and p is steered by how much the discriminator overfits.

Transforms (the paper's "blit" and "color" groups, each applied to an image with probability p,
independently per image): horizontal flip, rotation by a multiple of 90 degrees, integer translation
by up to 1/8 of the image (reflection padding), brightness (+N(0, 0.2)), contrast (x lognormal(0,
0.5 ln 2) around the image mean), and for colour images saturation (x lognormal(0, ln 2) around the
luma). The geometric ones are one exact resampling on the pixel grid; all are differentiable, so the
generator learns through them. Below p ~ 0.8 these do not leak into the generated images (the paper's
section 2.2).

The overfitting signal is r_t = E[sign(D(x_real))] over the last `interval` discriminator steps: 0
when the discriminator cannot tell, 1 when it is certain on every real image. Each interval p moves by
sign(r_t - target) x (images in the interval) / speed, clamped to [0, 1): from 0 to 1 in `speed`
images at most (the paper: target 0.6, 500k images; shorter runs want a faster speed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class AdaptiveAugment:
    """The augmentation probability p and its controller; `augment(x)` applies the pipeline at p."""

    def __init__(self, target: float = 0.6, interval: int = 4, speed: int = 100_000):
        self.target, self.interval, self.speed = target, interval, speed
        self.p = 0.0
        self._signs, self._count, self._steps = 0.0, 0, 0

    # -- the controller ------------------------------------------------------------------------
    def observe(self, d_real: torch.Tensor) -> None:
        """Record one discriminator step's logits on real images; adjust p every `interval` steps."""
        # Summed on the device; read back once per interval, not once per step.
        self._signs = self._signs + torch.sign(d_real.detach().float()).sum()
        self._count += d_real.numel()
        self._steps += 1
        if self._steps >= self.interval:
            r_t = float(self._signs) / max(self._count, 1)
            step = math.copysign(self._count / self.speed, r_t - self.target) if r_t != self.target else 0.0
            self.p = min(max(self.p + step, 0.0), 1.0 - 1e-6)
            self._signs, self._count, self._steps = 0.0, 0, 0

    def state(self) -> dict:
        return {"p": self.p, "signs": float(self._signs), "count": self._count, "steps": self._steps}

    def load_state(self, state: dict) -> None:
        self.p, self._signs = float(state["p"]), float(state["signs"])
        self._count, self._steps = int(state["count"]), int(state["steps"])

    # -- the pipeline --------------------------------------------------------------------------
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (N, C, H, W) in [-1, 1], each transform applied to each image with probability p."""
        if self.p <= 0:
            return x
        return _colour(_geometric(x, self.p), self.p)


def _chosen(n: int, p: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


def _geometric(x: torch.Tensor, p: float) -> torch.Tensor:
    """Flip, rotation by k x 90 degrees and integer translation, as one resampling of the pixel grid
    (every sample point falls on a pixel centre, so the resampling is exact)."""
    n, _, h, w = x.shape
    dev = x.device
    flip = torch.where(_chosen(n, p, dev), -1.0, 1.0)
    k = torch.where(_chosen(n, p, dev), torch.randint(0, 4, (n,), device=dev), torch.zeros(n, device=dev))
    angle = k.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    move = _chosen(n, p, dev)[:, None]
    shift = torch.where(move, torch.randint(-(h // 8), h // 8 + 1, (n, 2), device=dev), 0).float()
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _colour(x: torch.Tensor, p: float) -> torch.Tensor:
    n, c = x.shape[:2]
    dev, dt = x.device, x.dtype
    b = torch.where(_chosen(n, p, dev), torch.randn(n, device=dev) * 0.2, 0.0).to(dt)
    x = x + b.view(-1, 1, 1, 1)
    ct = torch.where(_chosen(n, p, dev), torch.exp2(torch.randn(n, device=dev) * 0.5), 1.0).to(dt)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * ct.view(-1, 1, 1, 1) + mean
    if c == 3:
        s = torch.where(_chosen(n, p, dev), torch.exp2(torch.randn(n, device=dev)), 1.0).to(dt)
        luma = (x * torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=dt).view(1, 3, 1, 1)).sum(1, True)
        x = (x - luma) * s.view(-1, 1, 1, 1) + luma
    return x
