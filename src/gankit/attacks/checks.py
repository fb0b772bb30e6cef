"""Signs that a robust accuracy overstates robustness (gradient masking), after the checks AutoAttack's
authors ship with it. Each returns a warning, never an error: the number is still reported, with the
reason to doubt it beside it.

- randomised: two forward passes on the same images differ (a noise layer, dropout left on): the
  standard version's attacks see a moving target; use version "rand" (EOT).
- probabilities: the outputs lie in [0, 1] and each row sums to one: a softmax head. Cross-entropy
  on probabilities saturates and its gradients vanish; attack the logits.
- zero gradients: the loss gradient is exactly zero for a noticeable share of images (a quantising
  or otherwise flat input layer): gradient attacks cannot move them.
- square: the gradient-free Square attack broke images that the gradient attacks could not: their
  gradients do not point where the model is weak.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import attack_mode

ZERO_GRADIENT_SHARE = 0.01  # warn when at least this share of images has an exactly zero gradient


def _warning(check: str, message: str) -> dict:
    return {"check": check, "message": message}


def model_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict]:
    """The checks that need only the model and some images (at most the first 100 are used)."""
    x = images[:100].detach()
    out: list[dict] = []
    with attack_mode(model):
        with torch.no_grad():
            a, b = model(x).float(), model(x).float()
        scale = float(a.abs().max().clamp_min(1.0))
        if float((a - b).abs().max()) > 1e-5 * scale:
            out.append(
                _warning(
                    "randomised",
                    "the model is randomised: two forward passes on the same images differ; gradient "
                    "attacks then see a moving target (use --version rand, which averages gradients "
                    "over 20 passes)",
                )
            )
        if (
            float(a.min()) >= 0
            and float(a.max()) <= 1
            and torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-4)
        ):
            out.append(
                _warning(
                    "probabilities",
                    "the model's outputs look like probabilities (in [0, 1], each row sums to one): "
                    "attacks need logits, and cross-entropy on probabilities masks gradients; drop the "
                    "softmax",
                )
            )
        y = a.argmax(1) if labels is None else labels[: len(x)].to(x.device)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xg).float(), y, reduction="sum"), xg)
    zero = grad.flatten(1).abs().sum(1) == 0
    share = float(zero.float().mean())
    if zero.any() and share >= ZERO_GRADIENT_SHARE:
        out.append(
            _warning(
                "zero gradients",
                f"the loss gradient is exactly zero for {int(zero.sum())} of {len(x)} images "
                f"({share:.0%}): gradient attacks cannot move them (a quantising or flat input layer?); "
                "trust Square and other gradient-free results more than the gradient attacks' here",
            )
        )
    return out


def square_check(breakdown: dict) -> list[dict]:
    """A warning when Square broke images that every gradient attack before it failed on."""
    n = int(breakdown.get("square", 0))
    if n <= 0:
        return []
    return [
        _warning(
            "square",
            f"the gradient-free Square attack broke {n} image{'s' if n != 1 else ''} that APGD and FAB "
            "could not: a sign of gradient masking; the gradient attacks' numbers overstate robustness",
        )
    ]
