"""The attack contract shared by every attack.

- Images are float tensors in [0, 1], NCHW; epsilon is in that pixel scale (the seed's 0.005 in
  [-1, 1] space is 0.0025 here).
- The classifier (see classifiers.py) owns resizing and normalisation; it is put in eval mode for the
  attack and its mode restored afterwards; its parameters get no gradients.
- Labels default to the model's own predictions (no label leaking); targeted attacks take class ids or
  'least-likely' / 'random'. The loss is cross-entropy on logits.
- The input tensor is never modified; the output is always inside the epsilon ball and the [0, 1] box.
- Random draws (random starts, random targets) are seeded per sample from the attack's seed and the
  sample's content, so a sample attacked alone gets the same result as inside any batch.
- `batch_size` bounds how many images reach the model at once: a whole test split can be handed to
  `run`, which then works through it a batch at a time on the model's device and returns the results
  where the images came from.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu import keep_freed_host_memory
from ..errors import GankitError
from ..nn.modes import modes_kept

NORMS = ("linf", "l2")


@dataclass
class AttackResult:
    """What an attack produced, per sample."""

    adversarial: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: torch.Tensor  # the labels attacked (given, or the model's clean predictions)
    targets: torch.Tensor | None  # target classes of a targeted attack
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    adv_confidence: torch.Tensor  # softmax probability of adv_pred
    success: torch.Tensor  # bool: prediction changed (untargeted) / reached the target (targeted)
    linf: torch.Tensor
    l2: torch.Tensor
    found_by: list | None = None  # ensembles (AutoAttack): the member that broke each sample


@contextmanager
def attack_mode(model: nn.Module):
    """Eval mode and frozen parameters for the duration of an attack; afterwards every submodule gets
    its own train/eval flag back (not the wrapper's flag, recursively) and every parameter its
    requires_grad."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    with modes_kept(model):
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in grads:
                p.requires_grad_(flag)


def sample_seeds(x: torch.Tensor, seed: int) -> list[int]:
    """A 63-bit seed per sample from its pixels and `seed` (independent of the batch it sits in)."""
    flat = x.detach().to("cpu", torch.float32).contiguous()
    return [
        int.from_bytes(
            hashlib.blake2b(
                s.numpy().tobytes(), digest_size=8, key=seed.to_bytes(8, "little", signed=True)
            ).digest(),
            "little",
        )
        >> 1
        for s in flat
    ]


def per_sample_rand(x: torch.Tensor, seed: int, kind: str = "uniform") -> torch.Tensor:
    """Noise shaped like `x`: uniform in [-1, 1] or standard normal, drawn per sample (see sample_seeds)."""
    out = []
    for s in sample_seeds(x, seed):
        g = torch.Generator().manual_seed(s)
        r = (
            torch.rand(x.shape[1:], generator=g) * 2 - 1
            if kind == "uniform"
            else torch.randn(x.shape[1:], generator=g)
        )
        out.append(r)
    return torch.stack(out).to(x.device, x.dtype)


def per_sample_uniform(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One uniform number in [0, 1) per sample, drawn from the whole sample's seed (see sample_seeds)."""
    draws = [torch.rand((), generator=torch.Generator().manual_seed(s)) for s in sample_seeds(x, seed)]
    return torch.stack(draws).to(x.device, x.dtype)


def kept_rows(keep: torch.Tensor, *tensors: torch.Tensor | None) -> tuple:
    """Each tensor's rows where `keep` is set (None stays None): how the iterative attacks compact
    the samples still searching once some leave."""
    return tuple(None if t is None else t[keep] for t in tensors)


def check_eps(eps: float, norm: str) -> None:
    """eps in pixel scale: [0, 1] for Linf; for L2 any size up to the image's own diagonal (checked
    per batch), as L2 budgets grow with the image (ImageNet's standard is 3.0)."""
    if not math.isfinite(eps) or eps < 0 or (norm == "linf" and eps > 1):
        bound = "[0, 1] (pixel scale)" if norm == "linf" else "a non-negative number (L2, pixel scale)"
        raise GankitError(f"--eps {eps:g}: expected a value in {bound}")


def project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project `adv` onto the `norm` ball of radius eps around x, then into the [0, 1] box."""
    if norm == "linf":
        adv = torch.max(torch.min(adv, x + eps), x - eps)
    else:
        delta = adv - x
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / n).clamp(max=1.0).view(-1, 1, 1, 1)
        adv = x + delta
    # Clamping into the box only moves pixels towards x (which is inside it): the ball still holds.
    return adv.clamp(0.0, 1.0)


class Attack:
    """Base class. Subclasses implement `perturb(x, labels, targets) -> (adversarial images, labels)`;
    `labels` may be None when the attack's first gradient is taken at the clean images
    (`first_step_at_input`): the labels then come free from that forward pass."""

    norm = "linf"
    first_step_at_input = True
    supports_target = True  # False: untargeted only (target= is refused)

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        norm: str = "linf",
        seed: int = 0,
        early_stop: bool = False,
        batch_size: int | None = None,
    ):
        if norm not in NORMS:
            raise GankitError(f"--norm {norm!r}: expected one of {', '.join(NORMS)}")
        check_eps(float(eps), norm)
        if batch_size is not None and batch_size < 1:
            raise GankitError(f"--batch-size {batch_size}: expected at least 1")
        self.model, self.eps, self.norm, self.seed, self.early_stop = (
            model,
            float(eps),
            norm,
            seed,
            early_stop,
        )
        self.batch_size = batch_size

    # -- batches -------------------------------------------------------------------------------
    def batches(self, n: int) -> list[slice]:
        """As few slices of at most `batch_size` rows as cover range(n), as even as can be (one slice
        when unbounded): 260 images at 250 go as 130 + 130, not 250 + a batch of 10 that costs
        nearly as much per step."""
        k = max(1, -(-n // self.batch_size)) if self.batch_size else 1
        edges = [i * n // k for i in range(k + 1)]
        return [slice(a, b) for a, b in zip(edges, edges[1:])]

    def model_device(self, fallback: torch.device) -> torch.device:
        """Where the model's parameters live (`fallback` for a model without any)."""
        p = next(self.model.parameters(), None)
        return fallback if p is None else p.device

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for `x`, without gradients, a batch at a time, on x's device."""
        dev = self.model_device(x.device)
        with torch.no_grad():
            return torch.cat([self.model(x[s].to(dev)).to(x.device) for s in self.batches(len(x))])

    def perturb_batches(self, x: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor | None):
        """`perturb` a batch at a time on the model's device; results on x's device. AutoAttack
        overrides it to run each of its attacks over every batch before the next attack starts."""
        dev = self.model_device(x.device)
        advs, labs = [], []
        for s in self.batches(len(x)):
            lab, tgt = (None if t is None else t[s].to(dev) for t in (labels, targets))
            adv, lab = self.perturb(x[s].to(dev), lab, tgt)
            advs.append(adv.detach().to(x.device))
            labs.append(lab.to(x.device))
        return (advs[0], labs[0]) if len(advs) == 1 else (torch.cat(advs), torch.cat(labs))

    # -- helpers for subclasses ----------------------------------------------------------------
    def loss_and_grad(self, adv: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor | None):
        """(per-sample loss to *increase*, its gradient w.r.t. the images, logits, labels); labels=None
        means `adv` is the clean input and its predictions are the labels."""
        adv = adv.detach().requires_grad_(True)
        logits = self.model(adv)
        if labels is None:
            labels = logits.detach().argmax(1)
        loss = self.per_sample_loss(logits, labels, targets)
        # Summing keeps each sample's gradient independent of the others in the batch.
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        return loss.detach(), grad, logits.detach(), labels

    def per_sample_loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None):
        """The loss each sample's attack increases: cross-entropy on the logits, or minus the
        cross-entropy towards the target."""
        if targets is None:
            return F.cross_entropy(logits.float(), labels, reduction="none")
        return -F.cross_entropy(logits.float(), targets, reduction="none")

    @staticmethod
    def keep_better(best, best_loss, best_ok, adv, loss, ok):
        """Merge one more try into the best so far, per sample: a success beats a failure, then the
        higher loss wins. Returns (best, best_loss, best_ok)."""
        better = (ok & ~best_ok) | ((ok == best_ok) & (loss > best_loss))
        best = torch.where(better.view(-1, 1, 1, 1), adv, best)
        return best, torch.where(better, loss, best_loss), best_ok | ok

    @staticmethod
    def succeeded(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred != labels if targets is None else pred == targets

    def perturb(self, x: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor | None):
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None, target=None) -> torch.Tensor:
        """Adversarial images for `images` (labels default to the model's predictions). The fast path:
        no forward pass beyond what the attack itself needs; `run` adds the per-sample report."""
        return self._attack(images, labels, target, report=False)[0]

    def run(self, images: torch.Tensor, labels: torch.Tensor | None = None, target=None) -> AttackResult:
        """Attack `images`; `target`: None (untargeted), class ids, 'least-likely' or 'random'."""
        adv, labels, targets, clean_logits, x = self._attack(images, labels, target, report=True)
        with attack_mode(self.model):
            probs = torch.softmax(self.logits(adv).float(), 1)
        conf, pred = probs.max(1)
        delta = (adv - x).flatten(1)
        success = pred != labels if targets is None else pred == targets
        return AttackResult(
            adv,
            labels,
            targets,
            clean_logits.argmax(1),
            pred,
            conf,
            success,
            delta.abs().amax(1),
            delta.norm(dim=1),
        )

    def _attack(self, images, labels, target, report: bool):
        if images.ndim != 4 or not images.is_floating_point():
            raise GankitError(
                f"attack input must be float NCHW images, got {tuple(images.shape)} {images.dtype}"
            )
        if images.min() < 0 or images.max() > 1:
            raise GankitError(
                "attack input must lie in [0, 1] (pixel scale); normalisation belongs to the model"
            )
        if self.norm == "l2" and self.eps > math.sqrt(images[0].numel()):
            raise GankitError(
                f"--eps {self.eps:g}: beyond the L2 diameter of the [0, 1] box for {tuple(images.shape[1:])} "
                f"images ({math.sqrt(images[0].numel()):.4g}); every image is inside that ball"
            )
        if target is not None and not self.supports_target:
            raise GankitError(f"{type(self).__name__.lower()} is untargeted: leave out --target")
        x = images.detach().clone()
        if x.device.type == "cpu":
            keep_freed_host_memory()
        with attack_mode(self.model):
            clean_logits = None
            if (
                report
                or target is not None
                or (labels is None and (not self.first_step_at_input or self.eps == 0))
            ):
                clean_logits = self.logits(x)
            if labels is not None:
                labels = labels.to(x.device).long()
            elif clean_logits is not None:
                labels = clean_logits.argmax(1)
            targets = None if target is None else resolve_targets(target, clean_logits, labels, x, self.seed)
            adv = x if self.eps == 0 else None
            if adv is None:
                adv, labels = self.perturb_batches(x, labels, targets)
            adv = project(adv.detach(), x, self.eps, self.norm)
        return adv, labels, targets, clean_logits, x


def resolve_targets(target, clean_logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, seed: int):
    """Target classes: None, an int or a tensor of ids, 'least-likely' or 'random' (never the label)."""
    k = clean_logits.shape[1]
    if target is None:
        return None
    if isinstance(target, str):
        if target == "least-likely":
            return clean_logits.argmin(1)
        if target == "random":
            picks = []
            for s, y in zip(sample_seeds(x, seed + 1), labels.tolist()):
                r = int(torch.randint(0, k - 1, (1,), generator=torch.Generator().manual_seed(s)))
                picks.append(r + (r >= y))  # uniform over the k - 1 other classes
            return torch.tensor(picks, device=x.device)
        raise GankitError(f"--target {target!r}: expected a class, 'least-likely' or 'random'")
    t = torch.as_tensor(target, device=x.device).long().flatten()
    if len(t) == 1:
        t = t.expand(len(x))
    if len(t) != len(x) or (t < 0).any() or (t >= k).any():
        raise GankitError(f"--target {target}: class ids must be in 0..{k - 1}, one per image or one for all")
    return t
