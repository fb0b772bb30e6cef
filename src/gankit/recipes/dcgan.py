"""DCGAN: unconditional image generation (the seed's first recipe).

Faithful to the seed by default: 100-d Gaussian noise, its 28 px networks, BCE-with-logits
losses, two Adam(1e-4) with Keras' default betas, batch 512, 200 epochs, images in [-1, 1], a
4x4 preview grid from a fixed latent batch after epoch 0 and every 10 epochs. As in the seed's
`train_step`, both networks are updated from one forward pass (simultaneous gradient step).
Beyond the seed: 1 or 3 channels, 28/32/64 px (the DCGAN paper's 64 px nets for colour
folders), and an optional EMA of the generator for previews and sampling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import TrainConfig, opt
from ..cpu import place
from ..data import ImageSet, known_datasets, load_dataset, stored_as_idx
from ..data.batches import InMemoryBatches
from ..data.transforms import from_tanh_range, to_tanh_range
from ..engine import distributed
from ..errors import GankitError
from ..nn.dcgan import SIZES, build_dcgan
from ..nn.modes import modes_kept
from . import register
from .common import GAN_LOSSES, GANRecipe, update_ema
from .losses import get_loss


@dataclass
class DCGANConfig(TrainConfig):
    recipe: str = "dcgan"
    data: str = "emnist"
    epochs: int = 200
    batch_size: int = 512
    lr: float = opt(1e-4, "learning rate of both Adam optimisers")
    beta1: float = opt(0.9, "Adam beta1 (the seed uses Keras' default 0.9; the DCGAN paper 0.5)")
    beta2: float = opt(0.999, "Adam beta2")
    gan_loss: str = opt(
        "bce",
        "GAN loss: bce (the seed; non-saturating), hinge, lsgan or wgan-gp (gankit.recipes.losses)",
        choices=GAN_LOSSES,
    )
    latent_dim: int = opt(100, "length of the Gaussian noise vector", model=True)
    image_size: int | None = opt(
        None, "28, 32 or 64 px (default: 28 for MNIST-family data, 64 for image folders)", model=True
    )
    channels: int | None = opt(None, "1 or 3 (default: from the data)", model=True)
    ema: float = opt(
        0.0,
        "decay of an exponential moving average of the generator used for previews "
        "and sampling (0 = off; 0.999 is typical)",
    )
    preview_every: int = 10

    def validate(self) -> None:
        super().validate()
        if self.image_size is not None and self.image_size not in SIZES:
            raise GankitError(f"--image-size {self.image_size}: expected one of {', '.join(map(str, SIZES))}")
        if self.channels not in (None, 1, 3):
            raise GankitError(f"--channels {self.channels}: expected 1 or 3")
        if not 0.0 <= self.ema < 1.0:
            raise GankitError(f"--ema {self.ema}: expected a decay in [0, 1)")
        if self.latent_dim <= 0:
            raise GankitError(f"--latent-dim {self.latent_dim}: expected a positive integer")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise GankitError(f"--{name} {getattr(self, name)}: expected a value in [0, 1)")


@register
class DCGAN(GANRecipe):
    """Unconditional image generation (Radford et al. 2016), the seed's DCGAN by default."""

    name = "dcgan"
    Config = DCGANConfig
    data_format = "images"
    capabilities = frozenset({"sample", "evaluate", "monitor"})
    smoke_options = dict(epochs=2, batch_size=32, ema=0.9, checkpoint_every=3)
    # The demo: under 3 minutes on a 2-core CPU of either kind (issue 12), so 8 epochs (~500 steps).
    # Chosen on validation FID (benchmarks/demo_length.py: 500 samples vs 1,000 Fashion-MNIST training
    # images outside the embedded subset, two seeds): the EMA generator at 0.99 beats the live one by
    # 25-27 FID there (a 0.999 average would still hold ~60% of the initial weights after 500 steps);
    # Adam 4e-4 and batch 128 were not reliably better. 30 epochs (`--epochs 30`) give better samples.
    demo_options = dict(
        data="fashion-mnist-small",
        epochs=8,
        batch_size=64,
        lr=2e-4,
        beta1=0.5,
        ema=0.99,
        preview_every=2,
        log_every=20,
        checkpoint_every=500,
    )
    preview_count = 16

    @classmethod
    def diffaugment_auto(cls, cfg: DCGANConfig) -> tuple[float, str]:
        """Where DiffAugment was measured to pay (docs/guides/own-data.md, benchmarks/small_data.py:
        Fashion-MNIST, batch 64, validation FID against 1,000 held-out training images, test FID at the
        end), counted in real images shown to the discriminator (passes x set size), which fits both set sizes
        measured where passes do not. The 64 px networks (batch-norm discriminator) with
        color,translation,cutout from ~300,000: at 1,000 images a tie at 256 passes (213 vs 216),
        ahead at 320 (157 vs 173) and 384 (119 vs 176); at 5,000 images a tie at 51 passes (151 vs
        149), ahead at 77 (91 vs 118; in another run of the same protocol 87 vs 116, and 72 vs 110
        at 102). The seed's 28/32 px networks (dropout
        discriminator) with translation only from ~1,500,000 (1,000 images: at 1,150 passes 42.5 vs
        41.8, 1,340 40.6 vs 41.0, 1,540 38.3 vs 41.1; one set size measured). Shorter runs lost
        quality with it."""
        return (3e5, "color,translation,cutout") if cfg.image_size == 64 else (1.5e6, "translation")

    def __init__(self, cfg: DCGANConfig, device: torch.device):
        super().__init__(cfg, device)
        self.build_pair(*self.networks(cfg), (cfg.beta1, cfg.beta2))
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
            self.modules["ema_generator"] = self.ema
        self._ema_statistics_stale = True  # see standing_statistics
        # The fixed preview latents come from their own generator: previews never touch training RNG.
        g_rng = torch.Generator().manual_seed(cfg.seed)
        self.fixed_latent = torch.randn(self.preview_count, cfg.latent_dim, generator=g_rng).to(device)
        self.fixed_conditions: tuple = ()

    @staticmethod
    def networks(cfg: DCGANConfig) -> tuple[nn.Module, nn.Module]:
        """(generator, discriminator) for the resolved config."""
        return build_dcgan(cfg.image_size, cfg.channels, cfg.latent_dim)

    @classmethod
    def load_data(cls, cfg: DCGANConfig) -> ImageSet:
        if cfg.image_size is None:
            cfg.image_size = 28 if stored_as_idx(cfg.data) else 64
        data = load_dataset(
            cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels, cfg.skip_bad_images
        )
        cfg.channels = data.channels
        return data

    def attach_data(self, data: ImageSet) -> None:
        self.batches = InMemoryBatches(data.images, self.cfg.batch_size, self.cfg.seed, self.device)
        self.train_images = data.images

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch  # labels: only where the batches carry them (a conditional subclass)
        real = place(to_tanh_range(images))
        z = torch.randn(len(real), self.cfg.latent_dim, device=self.device)
        given, drawn = self.conditions(labels), self.conditions(self.draw_classes(len(real)))
        with self.autocast():
            fake = self.generator(z, *drawn)
            seen_real, seen_fake = self.augment(real), self.augment(fake)
            d_real = self.discriminator(seen_real, *given).float()
            d_fake = self.discriminator(seen_fake, *drawn).float()
        loss = get_loss(self.cfg.gan_loss)
        loss_d = loss.discriminator(d_real, d_fake)
        gp = loss.penalty(self.discriminator, seen_real, seen_fake, *given)
        if gp is not None:
            loss_d = loss_d + gp
        loss_g = loss.generator(d_fake)
        extra = self.generator_regulariser(z, fake)
        if extra is not None:
            loss_g = loss_g + extra
        self.simultaneous_update(loss_d, loss_g)
        if self.ema is not None:
            update_ema(self.ema, self.generator, self.cfg.ema)
            self._ema_statistics_stale = True
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real.detach()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach()).mean(),
        }

    def generator_regulariser(self, z: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """A term added to the generator's loss (None: none; a conditional subclass adds one)."""
        return None

    @staticmethod
    def conditions(labels: torch.Tensor | None) -> tuple:
        """The networks' extra inputs besides z or images: () unconditional, (labels,) conditional."""
        return () if labels is None else (labels,)

    def draw_classes(self, n: int) -> torch.Tensor | None:
        """Classes of a fake batch (None: an unconditional recipe)."""
        return None

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        with modes_kept(self.modules.values()):
            return from_tanh_range(self.inference_module()(self.fixed_latent, *self.fixed_conditions))

    def inference_module(self) -> nn.Module:
        if self.ema is None:
            return self.generator.eval()
        if self._ema_statistics_stale:
            self.standing_statistics()
        return self.ema.eval()

    STANDING_BATCHES, STANDING_BATCH_SIZE = 16, 64

    @torch.no_grad()
    def standing_statistics(self) -> None:
        """Give the EMA generator's batch norms the statistics of its own activations.

        `update_ema` averages the weights but copies the live generator's running statistics, which
        belong to other weights: in eval mode the averaged generator normalises with the wrong
        means and variances. Here they are recomputed ("standing statistics", Brock et al. 2019) as
        the plain average over 16 batches of 64 fresh latents (their own seeded generator: training
        randomness is untouched, the result is reproducible). Validation FID (1,000 samples against
        1,000 held-out Fashion-MNIST training images; runs of docs/guides/own-data.md): 64 px,
        6,000 steps, 119.2 -> 84.1 with DiffAugment, 175.9 -> 157.1 without; 28 px, 24,000 steps,
        38.3 -> 37.8 with translation, 41.1 -> 40.6 without. Done when the EMA generator is used
        (previews, samples, export, monitoring) after training steps, not every step. Skipped inside
        a data-parallel run (its batch norms may be synchronised across processes, and only rank 0
        previews); a run loaded afterwards recomputes them."""
        self._ema_statistics_stale = False
        norms = [m for m in self.ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or distributed.active():
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        try:
            with modes_kept(self.ema):
                self.ema.train()
                for _ in range(self.STANDING_BATCHES):
                    z = torch.randn(self.STANDING_BATCH_SIZE, self.cfg.latent_dim, generator=g)
                    self.ema(z.to(self.device), *self.standing_conditions(self.STANDING_BATCH_SIZE, g))
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum

    def standing_conditions(self, n: int, g: torch.Generator) -> tuple:
        """The generator's extra inputs for `standing_statistics` (a conditional subclass: classes)."""
        return ()

    def generator_module(self) -> nn.Module:
        """The generator users sample (its EMA when kept), in eval mode: z -> images in [-1, 1]."""
        return self.inference_module()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """`n` images (N, C, H, W) in [0, 1] from the generator (its EMA when kept), from `seed`."""
        return sample(self.inference_module(), n, seed)

    def real_set(self, data: str | None = None):
        """The real images samples are compared with, at the run's size and channels: the test split of
        a named dataset, else the images of the folder (`data`, or the training folder: said so)."""
        from ..metrics.quality import RealSet

        cfg = self.cfg
        source = data or cfg.data
        named = source in known_datasets()
        split = "test" if named else ("train" if source == cfg.data else "given")
        data_dir = cfg.data_dir if source == cfg.data else None
        ds = load_dataset(source, split if named else "train", data_dir, cfg.image_size, cfg.channels)
        return RealSet(ds.images, f"{source}:{split}" if named else source, split)

    def monitor(self) -> tuple[str, float, bool]:
        """FID of cfg.eval_samples samples against as many training images (a fixed random draw): what
        --eval-every logs and selects the best checkpoint on (never the test split)."""
        from ..metrics.quality import RealSet, fid_of

        n = min(self.cfg.eval_samples, len(self.train_images))
        pick = torch.randperm(len(self.train_images), generator=torch.Generator().manual_seed(0))[:n]
        real = RealSet(self.train_images[pick].cpu(), f"{self.cfg.data}:train", "train")
        with modes_kept(self.modules.values()):
            fake = self.sample(self.cfg.eval_samples, seed=0)
        return "fid_train", fid_of(fake, real, self.cfg.extractor, device=self.device), True

    def evaluate(
        self,
        run_dir,
        data: str | None = None,
        num_samples: int | None = None,
        extractor: str | None = None,
        feature_precision: str = "fp32",
        seed: int = 0,
        **_,
    ) -> dict:
        """FID, KID, precision and recall of the generator's samples against the real test images
        (standard protocol by default: 10,000 samples; see gankit.metrics.quality)."""
        from ..metrics.quality import evaluate_generator

        return evaluate_generator(
            self, run_dir, self.real_set(data), num_samples, extractor, feature_precision, seed
        )


@torch.no_grad()
def sample(generator: nn.Module, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Draw `n` images (N, C, H, W) in [0, 1] from a trained generator, reproducibly from `seed`."""
    device = next(generator.parameters()).device
    latent_dim = generator.latent_dim
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=rng)
    generator.eval()
    return torch.cat([from_tanh_range(generator(part.to(device))).cpu() for part in z.split(batch_size)])
