"""Pieces several recipes share: GAN losses, the weight average (EMA), image helpers and the options of
the translation recipes. A recipe imports these from here, never from a sibling recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..config import TrainConfig, opt
from ..cpu import prepare
from ..engine.optim import adam
from ..errors import GankitError
from .base import Recipe
from .losses import LOSSES, get_loss

GAN_LOSSES = tuple(LOSSES)


def gan_loss(logits: torch.Tensor, real: bool, kind: str = "bce") -> torch.Tensor:
    """The discriminator's loss on `logits` against `real` (1) or fake (0) targets, by loss type (see
    gankit.recipes.losses). The generator's loss is `get_loss(kind).generator(D(G(z)))`."""
    return get_loss(kind).term(logits, real)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) copied."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
        for eb, mb in zip(ema.buffers(), model.buffers()):
            eb.copy_(mb)


def prediction_rows(paths, probs: torch.Tensor, class_names: list[str]) -> list[dict]:
    """[{path, label, confidence, top}] from per-image class probabilities (top: the 3 best as
    [label, probability]), what a classifier recipe's `classify` returns."""
    top_p, top_i = probs.topk(min(3, probs.shape[1]), dim=1)
    return [
        {
            "path": str(p),
            "label": class_names[int(i[0])],
            "confidence": float(q[0]),
            "top": [[class_names[int(a)], float(b)] for a, b in zip(i, q)],
        }
        for p, i, q in zip(paths, top_i, top_p)
    ]


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) -> (N, 3, H, W): grayscale repeated into three channels (a view)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@dataclass
class TranslationConfig(TrainConfig):
    """Options Pix2Pix and CycleGAN share: batch 1, Adam(2e-4, 0.5), crop/flip jitter, GAN loss."""

    sizes: ClassVar[tuple[int, ...]] = (64, 128, 256, 512)
    batch_size: int = 1
    lr: float = opt(2e-4, "learning rate of the Adam optimisers")
    beta1: float = opt(0.5, "Adam beta1")
    image_size: int = opt(256, "training crop and network size (a power of two: 64 to 512)", model=True)
    load_size: int | None = opt(
        None,
        "images are resized to this before the random crop "
        "(default: 286/256 of --image-size; equal to it = no crop jitter)",
    )
    flip: bool = opt(True, "random horizontal flips (use --no-flip for maps, text, ...)")
    gan_loss: str = opt(
        "bce", "GAN loss: bce (the seed), lsgan, hinge or wgan-gp (gankit.recipes.losses)", choices=GAN_LOSSES
    )
    ngf: int = opt(64, "filters of the generator's first layer (the others scale with it)", model=True)
    ndf: int = opt(64, "filters of the discriminator's first layer (the others scale with it)", model=True)

    def validate(self) -> None:
        super().validate()
        for name in ("ngf", "ndf"):
            if getattr(self, name) < 1:
                raise GankitError(f"--{name} {getattr(self, name)}: expected a positive number of filters")
        if self.image_size not in self.sizes:
            raise GankitError(
                f"--image-size {self.image_size}: expected one of {', '.join(map(str, self.sizes))}"
            )
        if self.load_size is not None and self.load_size < self.image_size:
            raise GankitError(
                f"--load-size {self.load_size}: must be at least --image-size {self.image_size}"
            )

    @property
    def resolved_load_size(self) -> int:
        return self.load_size or round(self.image_size * 286 / 256)


class GANRecipe(Recipe):
    """A recipe with one generator and one discriminator updated together from one forward pass."""

    def build_pair(self, generator: nn.Module, discriminator: nn.Module, betas: tuple[float, float]) -> None:
        """Put the pair on the device (channels-last), register it and give each network a fused Adam."""
        self.generator = prepare(generator, self.device)
        self.discriminator = prepare(discriminator, self.device)
        self.modules.update(generator=self.generator, discriminator=self.discriminator)
        self.optimizers.update(
            generator=adam(self.generator.parameters(), self.cfg.lr, betas),
            discriminator=adam(self.discriminator.parameters(), self.cfg.lr, betas),
        )
        self._g_params = list(self.generator.parameters())
        self._d_params = list(self.discriminator.parameters())

    def simultaneous_update(self, loss_d: torch.Tensor, loss_g: torch.Tensor) -> None:
        """Update both networks from the same forward pass (the seed's two gradient tapes): two backward
        passes restricted to each network's parameters, so D's update takes no gradient w.r.t. the
        images and G's none w.r.t. D's weights."""
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        loss_d.backward(inputs=self._d_params, retain_graph=True)
        loss_g.backward(inputs=self._g_params)
        self.optimizers["discriminator"].step()
        self.optimizers["generator"].step()


def split_record(cfg, indices: torch.Tensor, role: str) -> dict:
    """A run file recording which images of `cfg.data` a split holds (the training set's indices), with
    the seed that drew it and what the split is for: what `evaluate` and a reader of the run rely on."""
    return {
        "indices": indices.tolist(),
        "data": cfg.data,
        "seed": cfg.seed,
        "count": len(indices),
        "role": role,
    }
