"""Pix2Pix: paired image-to-image translation (the seed's third recipe; Isola et al. 2017).

As the seed: a U-Net generator (depth from the image size), a conditional 70x70 PatchGAN on
(input, target), BCE-with-logits GAN loss + 100 x L1, Adam(2e-4, beta1 0.5), batch 1, 150 epochs,
random jitter (resize to 286, random 256 crop, random flip), both networks updated from one forward
pass as the seed's two tapes. Its error fixed: the crop and flip are drawn per example and applied
identically to both images of a pair (the seed's flip was decided once, at trace time).
Beyond the seed: batch or instance norm, least-squares GAN loss, linear LR decay over the last
epochs (the reference code's schedule), 128/256/512 px and grayscale inputs or targets.

At inference the generator runs as in training (the paper's practice): batch norm uses the statistics
of the image being translated, dropout is off so a translation is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import viz
from ..config import TrainConfig, opt
from ..data import ImageSet
from ..data.paired import PIX2PIX_SETS, PIX2PIX_URL, PairBatches, fetch_archive_set, list_pairs, pair_channels
from ..data.pairs import paired_jitter
from ..data.transforms import from_tanh_range, to_tanh_range
from ..engine.optim import adam
from ..engine.schedules import constant_then_linear
from ..errors import GankitError
from ..io import write_json_atomic
from ..metrics.image import l1, psnr, ssim
from ..nn.patchgan import PatchDiscriminator
from ..nn.unet import UNetGenerator
from . import register
from .base import Recipe


def gan_loss(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """BCE-with-logits (the seed) or least squares (LSGAN, the CycleGAN paper) against 1 or 0."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def test_mode(net: nn.Module) -> nn.Module:
    """Put a generator in pix2pix's test mode, in place: batch norm on the statistics of the images
    being translated (without touching the stored running statistics), dropout off."""
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            m.track_running_stats = False
    return net


def train_mode(net: nn.Module) -> nn.Module:
    """Undo `test_mode`."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = True
    return net.train()


@dataclass
class TranslationConfig(TrainConfig):
    """Options Pix2Pix and CycleGAN share: batch 1, Adam(2e-4, 0.5), crop/flip jitter, GAN loss."""

    sizes: ClassVar[tuple[int, ...]] = (128, 256, 512)
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
    gan_loss: str = opt("bce", "GAN loss: bce (the seed) or lsgan", choices=("bce", "lsgan"))

    def validate(self) -> None:
        super().validate()
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


@dataclass
class Pix2PixConfig(TranslationConfig):
    recipe: str = "pix2pix"
    data: str = "cityscapes"
    epochs: int = 150
    direction: str = opt(
        "AtoB",
        "AtoB or BtoA (cityscapes: the photo is A, so labels -> photo is BtoA)",
        choices=("AtoB", "BtoA"),
        model=True,
    )
    norm: str = opt("batch", "normalisation in both networks", choices=("batch", "instance"), model=True)
    lambda_l1: float = opt(100.0, "weight of the L1 term")
    decay_epochs: int = opt(0, "decay the LR linearly to 0 over this many final epochs (0 = constant)")
    in_channels: int | None = opt(None, "input channels (default: from the data)", model=True)
    out_channels: int | None = opt(None, "target channels (default: from the data)", model=True)
    preview_every: int = 10

    def validate(self) -> None:
        super().validate()
        if self.decay_epochs < 0 or self.decay_epochs > self.epochs:
            raise GankitError(f"--decay-epochs {self.decay_epochs}: expected 0..--epochs ({self.epochs})")
        if self.lambda_l1 < 0:
            raise GankitError(f"--lambda-l1 {self.lambda_l1}: expected a non-negative weight")


def resolve_paired_root(cfg: Pix2PixConfig, progress: bool = True) -> Path:
    """The folder of the run's pairs: a named pix2pix archive (downloaded and checked) or a path."""
    if cfg.data in PIX2PIX_SETS:
        return fetch_archive_set(
            cfg.data, PIX2PIX_URL.format(cfg.data), PIX2PIX_SETS[cfg.data], cfg.data_dir, progress=progress
        )
    root = Path(cfg.data)
    if not root.is_dir():
        raise GankitError(
            f"--data {cfg.data!r}: no such folder and not a pix2pix dataset "
            f"({', '.join(sorted(PIX2PIX_SETS))})"
        )
    return root


@register
class Pix2Pix(Recipe):
    """The Pix2Pix recipe; see the module docstring."""

    name = "pix2pix"
    Config = Pix2PixConfig
    preview_count = 4

    def __init__(self, cfg: Pix2PixConfig, device: torch.device):
        super().__init__(cfg, device)
        cin, cout = cfg.in_channels or 3, cfg.out_channels or 3
        g = UNetGenerator(cin, cout, cfg.image_size, cfg.norm)
        d = PatchDiscriminator(cin + cout, cfg.norm)
        self.generator = g.to(device, memory_format=torch.channels_last)
        self.discriminator = d.to(device, memory_format=torch.channels_last)
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        betas = (cfg.beta1, 0.999)
        self.optimizers = {
            "generator": adam(self.generator.parameters(), cfg.lr, betas),
            "discriminator": adam(self.discriminator.parameters(), cfg.lr, betas),
        }
        self._g_params = list(self.generator.parameters())
        self._d_params = list(self.discriminator.parameters())
        self.fixed = None

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: Pix2PixConfig) -> ImageSet:
        root = resolve_paired_root(cfg)
        pairs = list_pairs(root, "train")
        ca, cb = pair_channels(pairs, cfg.skip_bad_images)
        if cfg.direction == "BtoA":
            ca, cb = cb, ca
        cfg.in_channels = cfg.in_channels or ca
        cfg.out_channels = cfg.out_channels or cb
        return pairs  # decoded by attach_data, which knows the device

    def _split(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (a, b) if self.cfg.direction == "AtoB" else (b, a)

    def _channels(self) -> tuple[int, int]:
        """(channels of A, channels of B) in the files, whatever the direction."""
        c = (self.cfg.in_channels, self.cfg.out_channels)
        return c if self.cfg.direction == "AtoB" else (c[1], c[0])

    def attach_data(self, pairs) -> None:
        cfg = self.cfg
        self.batches = PairBatches(
            pairs,
            self._channels(),
            cfg.resolved_load_size,
            cfg.image_size,
            cfg.batch_size,
            cfg.seed,
            self.device,
            cfg.skip_bad_images,
        )
        if cfg.decay_epochs:
            total = cfg.total_steps(len(self.batches))
            self.schedulers = {
                k: constant_then_linear(o, total, cfg.decay_epochs / cfg.epochs)
                for k, o in self.optimizers.items()
            }
        self.fixed = self._fixed_pairs(pairs)

    def _fixed_pairs(self, train_pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """The preview pairs: the first validation pairs (training pairs when there is no split)."""
        try:
            pairs = list_pairs(train_pairs.root, "val")
        except GankitError:
            pairs = train_pairs
        return self.eval_tensors(pairs, self.preview_count)

    def eval_tensors(self, pairs, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (input, target) of `pairs` at the network size, in the run's direction."""
        from ..data.paired import PairList, decode_pairs

        if limit is not None:
            pairs = PairList(pairs.a[:limit], pairs.b[:limit] if pairs.b else None, pairs.source, pairs.root)
        a, b, _ = decode_pairs(
            pairs, self._channels(), self.cfg.image_size, self.cfg.image_size, self.cfg.skip_bad_images
        )
        return self._split(a, b)

    # -- training ------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        a, b = self._split(*batch)
        if cfg.resolved_load_size != cfg.image_size or cfg.flip:
            a, b = paired_jitter(a, b, cfg.resolved_load_size, cfg.image_size, cfg.flip)
        x = to_tanh_range(a).contiguous(memory_format=torch.channels_last)
        y = to_tanh_range(b).contiguous(memory_format=torch.channels_last)
        with self.autocast():
            fake = self.generator(x)
            d_real = self.discriminator(x, y).float()
            d_fake = self.discriminator(x, fake).float()
        loss_d = gan_loss(d_real, True, cfg.gan_loss) + gan_loss(d_fake, False, cfg.gan_loss)
        loss_gan = gan_loss(d_fake, True, cfg.gan_loss)
        loss_l1 = (fake.float() - y).abs().mean()
        loss_g = loss_gan + cfg.lambda_l1 * loss_l1
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        # One forward pass, two backward passes restricted to each network (the seed's two tapes).
        loss_d.backward(inputs=self._d_params, retain_graph=True)
        loss_g.backward(inputs=self._g_params)
        self.optimizers["discriminator"].step()
        self.optimizers["generator"].step()
        for s in self.schedulers.values():
            s.step()
        return {
            "loss_d": loss_d.detach(),
            "loss_g_gan": loss_gan.detach(),
            "loss_l1": loss_l1.detach(),
        }

    @torch.no_grad()
    def translate_batch(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 inputs (N, C, S, S) -> outputs in [0, 1]."""
        g = self.inference_module()
        x = to_tanh_range(x_uint8.to(self.device)).contiguous(memory_format=torch.channels_last)
        return from_tanh_range(g(x))

    def preview(self) -> torch.Tensor:
        """Rows: inputs, targets, outputs (4 pairs)."""
        x, y = self.fixed
        out = self.translate_batch(x)
        train_mode(self.generator)
        return torch.cat([as_rgb(x.float().div(255)), as_rgb(y.float().div(255)), as_rgb(out.cpu())])

    def inference_module(self) -> nn.Module:
        return test_mode(self.generator)

    # -- use -----------------------------------------------------------------------------------
    def translator(self, to: str | None = None):
        """(network on tanh-range batches, network size, output channels) for `gankit translate`."""
        if to not in (None, "B" if self.cfg.direction == "AtoB" else "A"):
            raise GankitError(
                f"--to {to}: this pix2pix run translates "
                f"{self.cfg.direction[0]} to {self.cfg.direction[-1]} only"
            )
        g = self.inference_module()
        return (lambda t: g(t.to(self.device).contiguous(memory_format=torch.channels_last))), (
            self.cfg.image_size,
            self.cfg.in_channels,
            self.cfg.out_channels,
        )

    def evaluate(self, run_dir, data: str | None = None) -> dict:
        """L1, PSNR and SSIM on the validation pairs (val/, else test/), beside two trivial baselines
        (copying the input; the mean training target), and a panel input | target | output."""
        return evaluate_pairs(self, Path(run_dir), data)


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def evaluate_pairs(recipe: Pix2Pix, run: Path, data: str | None, panel_rows: int = 6) -> dict:
    cfg = recipe.cfg
    if data is not None:
        cfg.data = data
    root = resolve_paired_root(cfg, progress=True)
    try:
        pairs, split = list_pairs(root, "val"), "val"
    except GankitError:
        pairs, split = list_pairs(root, "train"), "train"
    x, y = recipe.eval_tensors(pairs)
    outs = torch.cat([recipe.translate_batch(x[k : k + 8]).cpu() for k in range(0, len(x), 8)])
    yf = y.float().div(255)
    result = {"split": split, "pairs": len(x), "source": str(pairs.source)}

    def scores(pred):
        return {
            "l1": round(l1(pred, yf).mean().item(), 5),
            "psnr": round(psnr(pred, yf).mean().item(), 3),
            "ssim": round(ssim(pred, yf).mean().item(), 4),
        }

    result["model"] = scores(outs)
    baselines = {}
    if x.shape[1] == y.shape[1] or x.shape[1] == 1:  # a grayscale input copied into each channel
        baselines["copy_input"] = scores(x.float().div(255).expand_as(yf))
    train = list_pairs(root, "train")
    tx, ty = recipe.eval_tensors(train, 512)
    mean_target = ty.float().div(255).mean(0, keepdim=True).expand_as(yf)
    baselines["mean_train_target"] = scores(mean_target)
    result["baselines"] = baselines
    n = min(panel_rows, len(x))
    tiles = torch.stack(
        [
            t
            for i in range(n)
            for t in (
                as_rgb(x[i : i + 1].float().div(255))[0],
                as_rgb(yf[i : i + 1])[0],
                as_rgb(outs[i : i + 1])[0],
            )
        ]
    )
    panel = run / "evaluation" / "panel.png"
    viz.save_image(viz.make_grid(tiles, nrow=3), panel)
    result["panel"] = str(panel)
    write_json_atomic(run / "evaluation" / "report.json", result)

    def line(name, sc):
        return f"  {name:<18} L1 {sc['l1']:.4f}  PSNR {sc['psnr']:6.2f} dB  SSIM {sc['ssim']:.3f}"

    result["lines"] = [
        f"{len(x)} {split} pairs of {pairs.source}:",
        line("model", result["model"]),
        *(line(k, v) for k, v in baselines.items()),
        f"wrote {panel} and {run / 'evaluation' / 'report.json'}",
    ]
    return result
