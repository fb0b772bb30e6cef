"""Pix2Pix: paired image-to-image translation (the seed's third recipe; Isola et al. 2017).

As the seed: a U-Net generator (depth from the image size), a conditional 70x70 PatchGAN on
(input, target), BCE-with-logits GAN loss + 100 x L1, Adam(2e-4, beta1 0.5), batch 1, 150 epochs,
random jitter (resize to 286, random 256 crop, random flip), both networks updated from one forward
pass as the seed's two tapes. Its error fixed: the crop and flip are drawn per example and applied
identically to both images of a pair (the seed's flip was decided once, at trace time).
Beyond the seed: batch or instance norm, least-squares GAN loss, linear LR decay over the last
epochs (the reference code's schedule), 128/256/512 px and grayscale inputs or targets.

At inference (eval mode) batch norm normalises each image by its own statistics, as the paper's
batch-1 test time does, so a translation does not depend on what else shares its batch; dropout is off
so a translation is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .. import viz
from ..config import opt
from ..cpu import place
from ..data.paired import (
    PIX2PIX_SETS,
    PairBatches,
    PairList,
    fetch_archive_set,
    list_pairs,
    pair_channels,
    pix2pix_archive,
)
from ..data.pairs import paired_jitter
from ..data.transforms import from_tanh_range, to_tanh_range
from ..engine.schedules import constant_then_linear
from ..errors import GankitError
from ..io import write_json_atomic
from ..metrics.image import l1, psnr, ssim
from ..metrics.quality import RealSet, quality_line, translation_quality
from ..nn.modes import modes_kept
from ..nn.patchgan import PatchDiscriminator
from ..nn.unet import UNetGenerator
from . import register
from .common import GANRecipe, TranslationConfig, as_rgb
from .losses import get_loss

# The direction users (and the seed) train each archive in, when --direction is not given: labels ->
# photo for cityscapes and facades (the photo is the left half, A), as the reference code's scripts do.
DEFAULT_DIRECTION = {"cityscapes": "BtoA", "facades": "BtoA"}


@dataclass
class Pix2PixConfig(TranslationConfig):
    recipe: str = "pix2pix"
    data: str = "cityscapes"
    epochs: int = 150
    direction: str | None = opt(
        None,
        "AtoB or BtoA (default: labels -> photo, BtoA, for cityscapes and facades, whose photo is the "
        "left half A; AtoB otherwise)",
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
            cfg.data, pix2pix_archive(cfg.data), PIX2PIX_SETS[cfg.data], cfg.data_dir, progress=progress
        )
    root = Path(cfg.data)
    if not root.is_dir():
        raise GankitError(
            f"--data {cfg.data!r}: no such folder and not a pix2pix dataset "
            f"({', '.join(sorted(PIX2PIX_SETS))})"
        )
    return root


@register
class Pix2Pix(GANRecipe):
    """Paired image-to-image translation (Isola et al. 2017): U-Net generator, conditional PatchGAN."""

    name = "pix2pix"
    Config = Pix2PixConfig
    data_format = "aligned"
    capabilities = frozenset({"translate", "evaluate"})
    smoke_options = dict(
        image_size=64, load_size=72, epochs=2, decay_epochs=1, checkpoint_every=3, ngf=8, ndf=8
    )
    preview_count = 4

    def __init__(self, cfg: Pix2PixConfig, device: torch.device):
        super().__init__(cfg, device)
        cin, cout = cfg.in_channels or 3, cfg.out_channels or 3
        g = UNetGenerator(cin, cout, cfg.image_size, cfg.norm, width=cfg.ngf)
        d = PatchDiscriminator(cin + cout, cfg.norm, width=cfg.ndf)
        self.build_pair(g, d, (cfg.beta1, 0.999))
        self.fixed = None

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: Pix2PixConfig) -> PairList:
        root = resolve_paired_root(cfg)
        pairs = list_pairs(root, "train")
        ca, cb = pair_channels(pairs, cfg.skip_bad_images)
        cfg.direction = cfg.direction or DEFAULT_DIRECTION.get(cfg.data, "AtoB")
        if cfg.direction == "BtoA":
            ca, cb = cb, ca
        cfg.in_channels = cfg.in_channels or ca
        cfg.out_channels = cfg.out_channels or cb
        return pairs  # decoded by attach_data, which knows the device

    @property
    def direction(self) -> str:
        return self.cfg.direction or "AtoB"

    def _split(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (a, b) if self.direction == "AtoB" else (b, a)

    def _channels(self) -> tuple[int, int]:
        """(channels of A, channels of B) in the files, whatever the direction."""
        c = (self.cfg.in_channels, self.cfg.out_channels)
        return c if self.direction == "AtoB" else (c[1], c[0])

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
        """The preview pairs: the first held-out pairs (val/, else test/), else the first training pairs."""
        pairs = held_out_pairs(Path(train_pairs.root)) or train_pairs
        return self.eval_tensors(pairs, self.preview_count)

    def eval_tensors(self, pairs, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (input, target) of `pairs` at the network size, in the run's direction."""
        from ..data.paired import decode_pairs

        if limit is not None:
            pairs = PairList(
                pairs.a[:limit], pairs.b[:limit] if pairs.b else None, pairs.source, pairs.root, pairs.split
            )
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
        x = place(to_tanh_range(a))
        y = place(to_tanh_range(b))
        with self.autocast():
            fake = self.generator(x)
            groups = (x.shape[1], y.shape[1])  # shifts and cutouts move input and target together
            seen_real = self.augment(torch.cat([x, y], 1), groups)
            seen_fake = self.augment(torch.cat([x, fake], 1), groups)
            d_real = self.discriminator(seen_real).float()
            d_fake = self.discriminator(seen_fake).float()
        loss = get_loss(cfg.gan_loss)
        loss_d = loss.discriminator(d_real, d_fake)
        gp = loss.penalty(self.discriminator, seen_real, seen_fake)
        if gp is not None:
            loss_d = loss_d + gp
        loss_gan = loss.generator(d_fake)
        loss_l1 = (fake.float() - y).abs().mean()
        loss_g = loss_gan + cfg.lambda_l1 * loss_l1
        self.simultaneous_update(loss_d, loss_g)
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
        x = place(to_tanh_range(x_uint8.to(self.device)))
        return from_tanh_range(g(x))

    def preview(self) -> torch.Tensor:
        """Rows: inputs, targets, outputs (4 pairs)."""
        x, y = self.fixed
        with modes_kept(self.generator):
            out = self.translate_batch(x)
        return torch.cat([as_rgb(x.float().div(255)), as_rgb(y.float().div(255)), as_rgb(out.cpu())])

    def inference_module(self) -> nn.Module:
        """The generator in eval mode: dropout off, each image normalised by its own statistics."""
        return self.generator.eval()

    # -- use -----------------------------------------------------------------------------------
    def translator_module(self, to: str | None = None) -> nn.Module:
        """The generator translating to `to` (the run's one direction) in eval mode, on [-1, 1] images."""
        if to not in (None, self.direction[-1]):
            raise GankitError(
                f"--to {to}: this pix2pix run translates {self.direction[0]} to {self.direction[-1]} only"
            )
        return self.inference_module()

    def translator(self, to: str | None = None):
        """(network on tanh-range batches, network size, output channels) for `gankit translate`."""
        g = self.translator_module(to)
        return (lambda t: g(place(t.to(self.device)))), (
            self.cfg.image_size,
            self.cfg.in_channels,
            self.cfg.out_channels,
        )

    def evaluate(
        self,
        run_dir,
        data: str | None = None,
        extractor: str | None = None,
        feature_precision: str = "fp32",
        **_,
    ) -> dict:
        """L1, PSNR and SSIM on the validation pairs (val/, else test/), beside two trivial baselines
        (copying the input; the mean training target); FID/KID of the outputs against the real targets
        of that split (standard Inception features; see metrics.quality.translation_quality); and a
        panel input | target | output."""
        return evaluate_pairs(
            self, Path(run_dir), data, extractor=extractor, feature_precision=feature_precision
        )


def held_out_pairs(root: Path) -> PairList | None:
    """The pairs of root/val (else root/test); None when the folder has no held-out split."""
    if not any((root / s).is_dir() for s in ("val", "test")):
        return None
    return list_pairs(root, "val")


def evaluate_pairs(
    recipe: Pix2Pix,
    run: Path,
    data: str | None,
    panel_rows: int = 6,
    extractor: str | None = None,
    feature_precision: str = "fp32",
) -> dict:
    cfg = recipe.cfg
    if data is not None:
        cfg.data = data
    root = resolve_paired_root(cfg, progress=True)
    pairs = held_out_pairs(root)
    warning = None
    if pairs is not None:
        split = pairs.split
    elif data is not None:  # a folder of pairs given for evaluation: all of it
        pairs, split = list_pairs(root, "train"), "given"
    else:
        pairs, split = list_pairs(root, "train"), "train"
        warning = (
            f"note: {root} has no val/ or test/ folder, so these scores are on the TRAINING pairs, not a "
            "held-out measure (pass --data with held-out pairs)"
        )
    x, y = recipe.eval_tensors(pairs)
    outs = torch.cat([recipe.translate_batch(x[k : k + 8]).cpu() for k in range(0, len(x), 8)])
    yf = y.float().div(255)
    result = {"split": split, "pairs": len(x), "source": str(pairs.source)}
    if warning:
        result["warning"] = warning

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
    real = RealSet(y, f"{pairs.source} targets", split)
    result["quality"] = translation_quality(outs, real, extractor, feature_precision, recipe.device)
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
        *([warning] if warning else []),
        f"{len(x)} {split} pairs of {pairs.source}:",
        line("model", result["model"]),
        *(line(k, v) for k, v in baselines.items()),
        quality_line("outputs vs targets", result["quality"]),
        f"wrote {panel} and {run / 'evaluation' / 'report.json'}",
    ]
    return result
