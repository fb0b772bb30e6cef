"""SNGAN: spectrally normalised ResNet GANs (Miyato et al. 2018), unconditional (`sngan`) and
class-conditional with a projection discriminator and conditional batch norm (`csngan`, Miyato &
Koyama 2018).

The networks are gankit.nn.sngan's (28 px for MNIST-family data, 32 px, 64 px for folders). Training
follows Mimicry's SNGAN: hinge loss, Adam(2e-4, betas 0.0 and 0.9), `--n-dis 5` discriminator steps
for each generator step (each on a fresh real batch: a training step here is one discriminator step,
and the generator steps after the 1st, (n-dis+1)-th, ... of them), latent 128, batch 64. Beyond it:
separate learning rates for the two networks (`--lr-d`, the two time-scale update rule of Heusel et
al. 2017), an EMA of the generator for previews, samples, export and evaluation, any loss of
gankit.recipes.losses (`--gan-loss`), lazy R1 on the real images (`--r1 GAMMA`, every `--r1-every`
discriminator steps), and DiffAugment or adaptive augmentation (`--ada TARGET`, gankit.nn.ada) on
reals and fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..config import opt
from ..cpu import place
from ..data.transforms import to_tanh_range
from ..errors import GankitError
from ..nn.ada import AdaptiveAugment
from ..nn.sngan import ResNetDiscriminator, ResNetGenerator
from . import register
from .cdcgan import CDCGAN, CDCGANConfig
from .common import GAN_LOSSES, update_ema
from .dcgan import DCGAN, DCGANConfig
from .losses import LazyR1, get_loss


@dataclass
class SNGANConfig(DCGANConfig):
    recipe: str = "sngan"
    data: str = "fashion-mnist"
    epochs: int = 40
    batch_size: int = 64
    lr: float = opt(2e-4, "learning rate of the generator's Adam (and of the discriminator's unless --lr-d)")
    lr_d: float | None = opt(None, "learning rate of the discriminator's Adam (TTUR; default: --lr)")
    beta1: float = opt(0.0, "Adam beta1 of both networks (SNGAN's 0.0)")
    beta2: float = opt(0.9, "Adam beta2 of both networks (SNGAN's 0.9)")
    latent_dim: int = opt(128, "length of the Gaussian noise vector", model=True)
    gan_loss: str = opt("hinge", "GAN loss: hinge (SNGAN), bce, lsgan or wgan-gp", choices=GAN_LOSSES)
    n_dis: int = opt(5, "discriminator steps per generator step")
    ngf: int = opt(128, "generator width (channels of its residual blocks; the paper's 256)", model=True)
    ndf: int = opt(128, "discriminator width (channels of its residual blocks; the paper's 128)", model=True)
    r1: float = opt(0.0, "weight gamma of the R1 penalty on real images (0 = off; e.g. 0.1-10)")
    r1_every: int = opt(16, "apply R1 every N discriminator steps, weighted N times (lazy regularisation)")
    ada: float | None = opt(
        None,
        "adaptive augmentation (Karras et al. 2020): the target of the overfitting signal r_t in (0, 1), "
        "e.g. 0.6 (default: off)",
    )
    ada_interval: int = opt(4, "discriminator steps between adjustments of the augmentation probability")
    ada_speed: int = opt(100_000, "images over which the augmentation probability can go from 0 to 1")
    ema: float = opt(0.999, "decay of the generator's weight average used for samples (0 = off)")
    preview_every: int = 5

    def validate(self) -> None:
        super().validate()
        if self.n_dis < 1:
            raise GankitError(
                f"--n-dis {self.n_dis}: expected at least 1 discriminator step per generator step"
            )
        if self.lr_d is not None and not self.lr_d > 0:
            raise GankitError(f"--lr-d {self.lr_d}: expected a positive learning rate")
        for name in ("ngf", "ndf"):
            if getattr(self, name) < 8:
                raise GankitError(f"--{name} {getattr(self, name)}: expected a width of at least 8 channels")
        if self.r1 < 0:
            raise GankitError(f"--r1 {self.r1}: expected a weight >= 0")
        if self.ada is not None and not 0 < self.ada < 1:
            raise GankitError(f"--ada {self.ada}: expected a target for r_t in (0, 1), e.g. 0.6")
        if self.ada is not None and self.diffaugment not in ("none", "auto"):
            raise GankitError(
                f"--ada with --diffaugment {self.diffaugment}: "
                "choose one augmentation of the discriminator's input"
            )
        if self.ada_interval < 1 or self.ada_speed < 1:
            raise GankitError(
                f"--ada-interval {self.ada_interval} / --ada-speed {self.ada_speed}: "
                "expected positive integers"
            )
        if self.r1_every < 1:
            raise GankitError(f"--r1-every {self.r1_every}: expected a positive number of steps")


class _SNGANTraining:
    """The SNGAN networks and step, shared by the unconditional and the conditional recipe."""

    cfg: SNGANConfig
    classes: ClassVar[bool] = False

    @classmethod
    def networks(cls, cfg) -> tuple[nn.Module, nn.Module]:
        k = (cfg.num_classes or 2) if cls.classes else 0
        return (
            ResNetGenerator(cfg.latent_dim, cfg.channels, cfg.image_size, cfg.ngf, k),
            ResNetDiscriminator(cfg.channels, cfg.image_size, cfg.ndf, k),
        )

    def _setup_sngan(self) -> None:
        cfg = self.cfg
        for g in self.optimizers["discriminator"].param_groups:
            g["lr"] = cfg.lr_d or cfg.lr
        self.loss = get_loss(cfg.gan_loss)
        self.r1 = LazyR1(cfg.r1, cfg.r1_every)
        self.d_steps = 0
        self._last_g = {}
        self.ada = AdaptiveAugment(cfg.ada, cfg.ada_interval, cfg.ada_speed) if cfg.ada else None

    def augment(self, images: torch.Tensor, groups=None) -> torch.Tensor:
        """What the discriminator sees: adaptive augmentation at its current p when on, else the run's
        DiffAugment (or nothing)."""
        if self.ada is not None:
            return self.ada.augment(images)
        return super().augment(images, groups)

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg, loss = self.cfg, self.loss
        images, labels = batch
        real = place(to_tanh_range(images))
        n = len(real)
        given, drawn = self.conditions(labels), self.conditions(self.draw_classes(n))
        with torch.no_grad(), self.autocast():
            fake = self.generator(torch.randn(n, cfg.latent_dim, device=self.device), *drawn)
        with self.autocast():
            seen_real, seen_fake = self.augment(real), self.augment(fake)
            d_real = self.discriminator(seen_real, *given).float()
            d_fake = self.discriminator(seen_fake, *drawn).float()
        loss_d = loss.discriminator(d_real, d_fake)
        out = {"loss_d": loss_d.detach()}
        gp = loss.penalty(self.discriminator, seen_real, seen_fake, *given)
        if gp is not None:
            loss_d = loss_d + gp
        if self.r1.due(self.d_steps):
            r1 = self.r1(self.discriminator, seen_real, *given)
            loss_d = loss_d + r1
            out["r1"] = r1.detach()
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward(inputs=self._d_params)
        opt_d.step()
        if self.ada is not None:
            self.ada.observe(d_real)
            out["ada_p"] = torch.tensor(self.ada.p)
        if self.d_steps % cfg.n_dis == 0:  # the generator steps on the 1st, (n+1)-th, ... step
            self._last_g = self._generator_step(n)
        self.d_steps += 1
        out.update(self._last_g)
        out.update(d_real=d_real.detach().mean(), d_fake=d_fake.detach().mean())
        return out

    def _generator_step(self, n: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        z = torch.randn(n, cfg.latent_dim, device=self.device)
        drawn = self.conditions(self.draw_classes(n))
        with self.autocast():
            fake = self.generator(z, *drawn)
            loss_g = self.loss.generator(self.discriminator(self.augment(fake), *drawn).float())
        extra = self.generator_regulariser(z, fake)
        if extra is not None:
            loss_g = loss_g + extra
        opt_g = self.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self._g_params)
        opt_g.step()
        if self.ema is not None:
            update_ema(self.ema, self.generator, cfg.ema)
            self._ema_statistics_stale = True
        return {"loss_g": loss_g.detach()}

    def extra_state(self) -> dict:
        state = {"d_steps": torch.tensor(self.d_steps)}
        if "loss_g" in self._last_g:
            state["last_loss_g"] = self._last_g["loss_g"].detach().cpu()
        if self.ada is not None:
            state.update(
                {f"ada_{k}": torch.tensor(v, dtype=torch.float64) for k, v in self.ada.state().items()}
            )
        return state

    def load_extra_state(self, state: dict) -> None:
        self.d_steps = int(state["d_steps"])
        if "last_loss_g" in state:
            self._last_g = {"loss_g": state["last_loss_g"].to(self.device)}
        if self.ada is not None:
            self.ada.load_state({k[4:]: state[k].item() for k in state if k.startswith("ada_")})


@register
class SNGAN(_SNGANTraining, DCGAN):
    """Unconditional generation with a spectrally normalised ResNet GAN (Miyato et al. 2018)."""

    name = "sngan"
    Config = SNGANConfig
    smoke_options = dict(
        epochs=2, batch_size=16, ngf=16, ndf=16, n_dis=2, r1=1.0, r1_every=2, checkpoint_every=3
    )
    demo_options = None

    @classmethod
    def diffaugment_auto(cls, cfg) -> None:
        """Where DiffAugment pays has not been measured for these networks: `auto` leaves it off."""
        return None

    def __init__(self, cfg: SNGANConfig, device: torch.device):
        super().__init__(cfg, device)
        self._setup_sngan()


@dataclass
class CSNGANConfig(SNGANConfig, CDCGANConfig):
    recipe: str = "csngan"
    mode_seeking: float = opt(
        0.0, "weight of the mode-seeking term (Mao et al. 2019); conditional batch norm needs none (0 = off)"
    )


@register
class CSNGAN(_SNGANTraining, CDCGAN):
    """Class-conditional generation: SNGAN with conditional batch norm and a projection discriminator."""

    name = "csngan"
    Config = CSNGANConfig
    classes = True
    smoke_options = SNGAN.smoke_options
    demo_options = None
    diffaugment_auto = SNGAN.diffaugment_auto

    def __init__(self, cfg: CSNGANConfig, device: torch.device):
        super().__init__(cfg, device)
        self._setup_sngan()
