"""GAN losses in one place, chosen by type, and the gradient penalties that go with them.

Every loss maps the discriminator's logits on real and on fake images to the discriminator's and the
generator's loss (logits are raw: no sigmoid or softmax in front):

| name | discriminator | generator | paper |
| --- | --- | --- | --- |
| bce | BCE(real, 1) + BCE(fake, 0) | BCE(fake, 1): the non-saturating loss | Goodfellow et al. 2014 |
| hinge | mean relu(1 - real) + mean relu(1 + fake) | -mean fake | Lim & Ye 2017; Miyato et al. 2018 |
| lsgan | mean (real - 1)^2 + mean fake^2 | mean (fake - 1)^2 | Mao et al. 2017 |
| wgan-gp | mean fake - mean real (+ its penalty) | -mean fake | Gulrajani et al. 2017 |

WGAN-GP adds only its penalty: `penalty(...)` returns 10 x the one-centred gradient penalty on random
interpolates of real and fake for it, and nothing for the others. The zero-centred penalties of
Mescheder et al. 2018 (R1 on the reals, R2 on the fakes) are `zero_centred_penalty`; `LazyR1` applies R1
every k discriminator steps with its weight scaled by k (StyleGAN2's lazy regularisation), so its cost
is paid once in k steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GankitError


class GANLoss:
    """One adversarial loss: `discriminator(real, fake)`, `generator(fake)` and, for the translation
    recipes' per-term use, `term(logits, real)`."""

    name = ""
    gp_weight = 0.0  # the one-centred penalty on interpolates that the loss carries (WGAN-GP: 10)

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.term(real, True) + self.term(fake, False)

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return self.term(fake, True)

    def term(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """The discriminator's loss on `logits` taken as real (True) or fake; the generator's loss on
        its fakes is `term(fake, True)` for the losses whose generator loss has that form."""
        raise NotImplementedError

    def penalty(
        self, discriminator, real: torch.Tensor, fake: torch.Tensor, *conditions
    ) -> torch.Tensor | None:
        """The gradient penalty the loss itself carries (WGAN-GP), else None."""
        if not self.gp_weight:
            return None
        a = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        mixed = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
        return self.gp_weight * gradient_penalty(discriminator, mixed, 1.0, *conditions)


class BCE(GANLoss):
    name = "bce"

    def term(self, logits, real):
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)


class Hinge(GANLoss):
    name = "hinge"

    def term(self, logits, real):
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()

    def generator(self, fake):
        return -fake.mean()


class LeastSquares(GANLoss):
    name = "lsgan"

    def term(self, logits, real):
        return F.mse_loss(logits, torch.ones_like(logits) if real else torch.zeros_like(logits))


class WGANGP(GANLoss):
    name = "wgan-gp"
    gp_weight = 10.0

    def term(self, logits, real):
        return -logits.mean() if real else logits.mean()


LOSSES: dict[str, type[GANLoss]] = {c.name: c for c in (BCE, Hinge, LeastSquares, WGANGP)}


def get_loss(name: str, option: str = "--gan-loss") -> GANLoss:
    """The loss called `name`; an unknown name is a one-line error naming `option`."""
    if name not in LOSSES:
        raise GankitError(f"{option} {name!r}: expected one of {', '.join(LOSSES)}")
    return LOSSES[name]()


def gradient_penalty(discriminator, x: torch.Tensor, centre: float, *conditions) -> torch.Tensor:
    """mean over images of (||dD(x)/dx|| - centre)^2, with a graph for the discriminator's update.
    `x` must require grad; the discriminator runs in fp32 here (a penalty on bf16 gradients is noise)."""
    with torch.autocast(x.device.type, enabled=False):
        out = discriminator(x, *conditions).float()
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(dim=1) if centre else grad.flatten(1).pow(2).sum(1)
    return ((norm - centre) ** 2).mean() if centre else norm.mean()


def zero_centred_penalty(discriminator, x: torch.Tensor, *conditions) -> torch.Tensor:
    """mean ||dD(x)/dx||^2: R1 on real images, R2 on fakes (Mescheder et al. 2018). Weighted gamma / 2
    by the caller."""
    return gradient_penalty(discriminator, x.detach().requires_grad_(True), 0.0, *conditions)


class LazyR1:
    """R1 every `every` discriminator steps, weighted gamma / 2 x every (Karras et al. 2020's lazy
    regularisation: the same expected penalty, at 1/every of the cost). gamma 0 is off."""

    def __init__(self, gamma: float, every: int = 16):
        if gamma < 0:
            raise GankitError(f"--r1 {gamma}: expected a weight >= 0")
        if every < 1:
            raise GankitError(f"--r1-every {every}: expected a positive number of steps")
        self.gamma, self.every = gamma, every

    def due(self, d_step: int) -> bool:
        return self.gamma > 0 and d_step % self.every == 0

    def __call__(self, discriminator, real: torch.Tensor, *conditions) -> torch.Tensor:
        return self.gamma / 2 * self.every * zero_centred_penalty(discriminator, real, *conditions)
