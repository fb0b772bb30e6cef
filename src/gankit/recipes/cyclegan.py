"""CycleGAN: unpaired translation between two image domains (the seed's fourth recipe; Zhu et al. 2017).

As the seed: generators G: A->B and F: B->A (U-Net, instance norm), two unconditional 70x70 PatchGAN
discriminators with instance norm, BCE-with-logits GAN loss, cycle loss lambda = 10, identity loss
0.5 x lambda, discriminator loss halved, Adam(2e-4, beta1 0.5), batch 1, 40 epochs, jitter (resize
286, random 256 crop, random flip) drawn per image.
What the paper relies on and the seed leaves out (the seed's errors, ../shared/DESIGN.md), on by
default: a 50-image history pool for each discriminator and a constant LR that decays linearly to
zero over the second half of training. As options: the paper's ResNet generator
(`--generator resnet`, 9 blocks) and least-squares GAN loss (`--gan-loss lsgan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .. import viz
from ..config import opt
from ..cpu import place, prepare
from ..data.paired import fetch_archive_set
from ..data.pairs import jitter
from ..data.transforms import from_tanh_range, to_tanh_range
from ..data.unpaired import (
    CYCLEGAN_SETS,
    UnpairedBatches,
    UnpairedData,
    cyclegan_archive,
    domain_folders,
    load_domains,
)
from ..engine.optim import adam
from ..engine.schedules import constant_then_linear
from ..errors import GankitError
from ..io import write_json_atomic
from ..nn.modes import modes_kept
from ..nn.patchgan import PatchDiscriminator
from ..nn.pool import ImagePool
from ..nn.resnet import ResnetGenerator
from ..nn.unet import UNetGenerator
from . import register
from .base import Recipe
from .common import TranslationConfig, as_rgb
from .losses import get_loss


@dataclass
class CycleGANConfig(TranslationConfig):
    recipe: str = "cyclegan"
    data: str = "summer2winter_yosemite"
    epochs: int = 40
    generator: str = opt(
        "unet",
        "unet (the seed) or resnet (the paper: 9 residual blocks at 256 px)",
        choices=("unet", "resnet"),
        model=True,
    )
    resnet_blocks: int = opt(9, "residual blocks of the resnet generator", model=True)
    lambda_cycle: float = opt(10.0, "weight of each cycle-consistency L1 term")
    lambda_identity: float = opt(0.5, "identity L1 weight, as a fraction of --lambda-cycle (0 = off)")
    pool_size: int = opt(50, "history of generated images shown to the discriminators (0 = off)")
    decay_epochs: int | None = opt(
        None,
        "decay the LR linearly to 0 over this many final epochs (default: the second half; 0 = constant)",
    )
    channels_a: int | None = opt(None, "channels of domain A (default: from the data)", model=True)
    channels_b: int | None = opt(None, "channels of domain B (default: from the data)", model=True)
    preview_every: int = 1

    def validate(self) -> None:
        super().validate()
        if self.pool_size < 0:
            raise GankitError(f"--pool-size {self.pool_size}: expected 0 or more")
        if self.decay_epochs is not None and not 0 <= self.decay_epochs <= self.epochs:
            raise GankitError(f"--decay-epochs {self.decay_epochs}: expected 0..--epochs ({self.epochs})")
        for name in ("lambda_cycle", "lambda_identity"):
            if getattr(self, name) < 0:
                raise GankitError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected >= 0")

    @property
    def decay_fraction(self) -> float:
        d = self.epochs // 2 if self.decay_epochs is None else self.decay_epochs
        return d / self.epochs


def cycle_losses(
    g_ab: nn.Module, g_ba: nn.Module, x: torch.Tensor, y: torch.Tensor, lambda_cycle: float, lambda_id: float
) -> dict[str, torch.Tensor]:
    """Fakes, cycle and identity terms of one step: x in A, y in B (tanh range).

    Each image a generator sees in the step goes through it in as few calls as the order allows (exact
    with instance norm, which is per image): F first, on y (and x for the identity term); then G, in
    one batch, on x, y and F's fake (its cycle input); then F on G's fake. G is called once and F twice
    instead of three times each: every call computes each weight's gradient (for the U-Net's inner
    layers an 8 M-element product at memory speed on a CPU) and a second call adds them up.
    """
    n = len(x)
    use_id = lambda_id > 0 and x.shape[1] == y.shape[1]
    if use_id:
        fake_a, same_a = g_ba(torch.cat([y, x])).split(n)
        fake_b, same_b, rec_b = g_ab(torch.cat([x, y, fake_a])).split(n)
    else:
        fake_a = g_ba(y)
        fake_b, rec_b = g_ab(torch.cat([x, fake_a])).split(n)
    cyc = (g_ba(fake_b).float() - x).abs().mean() + (rec_b.float() - y).abs().mean()
    out = {"fake_b": fake_b, "fake_a": fake_a, "cycle": lambda_cycle * cyc}
    if use_id:
        ident = (same_a.float() - x).abs().mean() + (same_b.float() - y).abs().mean()
        out["identity"] = lambda_cycle * lambda_id * ident
    else:
        out["identity"] = torch.zeros((), device=x.device)
    return out


def resolve_unpaired_root(cfg: CycleGANConfig, progress: bool = True) -> Path:
    """The domains' folder: a named CycleGAN archive (downloaded, extracted, counted) or a path."""
    if cfg.data in CYCLEGAN_SETS:
        remote = cyclegan_archive(cfg.data)
        return fetch_archive_set(cfg.data, remote, CYCLEGAN_SETS[cfg.data], cfg.data_dir, progress=progress)
    root = Path(cfg.data)
    if not root.is_dir():
        raise GankitError(
            f"--data {cfg.data!r}: no such folder and not a CycleGAN dataset "
            f"({', '.join(sorted(CYCLEGAN_SETS))})"
        )
    return root


@register
class CycleGAN(Recipe):
    """Unpaired translation between two image domains (Zhu et al. 2017): two generators, cycle loss."""

    name = "cyclegan"
    Config = CycleGANConfig
    data_format = "unaligned"
    capabilities = frozenset({"translate", "two_way", "evaluate"})
    smoke_options = dict(image_size=64, load_size=72, epochs=2, pool_size=3, checkpoint_every=3, ngf=8, ndf=8)
    preview_count = 4

    def __init__(self, cfg: CycleGANConfig, device: torch.device):
        super().__init__(cfg, device)
        ca, cb = cfg.channels_a or 3, cfg.channels_b or 3

        def generator(cin, cout):
            if cfg.generator == "resnet":
                return ResnetGenerator(cin, cout, cfg.resnet_blocks, "instance", width=cfg.ngf)
            return UNetGenerator(cin, cout, cfg.image_size, "instance", width=cfg.ngf)

        self.g_ab = prepare(generator(ca, cb), device)
        self.g_ba = prepare(generator(cb, ca), device)
        self.d_a = prepare(PatchDiscriminator(ca, "instance", width=cfg.ndf), device)
        self.d_b = prepare(PatchDiscriminator(cb, "instance", width=cfg.ndf), device)
        self.modules = {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}
        betas = (cfg.beta1, 0.999)
        self._g_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        self._d_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.optimizers = {
            "generators": adam(self._g_params, cfg.lr, betas),
            "discriminators": adam(self._d_params, cfg.lr, betas),
        }
        self.pool_a = ImagePool(cfg.pool_size, seed=cfg.seed * 2 + 1)
        self.pool_b = ImagePool(cfg.pool_size, seed=cfg.seed * 2 + 2)
        self.fixed = None

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: CycleGANConfig) -> UnpairedData:
        root = resolve_unpaired_root(cfg)
        ch = (cfg.channels_a, cfg.channels_b) if cfg.channels_a and cfg.channels_b else None
        a, b = load_domains(root, "train", cfg.resolved_load_size, cfg.skip_bad_images, ch)
        cfg.channels_a, cfg.channels_b = a.shape[1], b.shape[1]
        return UnpairedData(root, a, b)

    def attach_data(self, data: UnpairedData) -> None:
        cfg = self.cfg
        self.root = data.root
        self.batches = UnpairedBatches(data.a, data.b, cfg.batch_size, cfg.seed, self.device)
        if cfg.decay_fraction > 0:
            total = cfg.total_steps(len(self.batches))
            self.schedulers = {
                k: constant_then_linear(o, total, cfg.decay_fraction) for k, o in self.optimizers.items()
            }
        ta, tb = self.test_images(self.preview_count)
        self.fixed = (ta, tb)

    def test_images(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 test images of both domains at the network size (testA/testB, else the training ones)."""
        cfg = self.cfg
        channels = (cfg.channels_a, cfg.channels_b)
        a, b = load_domains(self.root, "test", cfg.image_size, cfg.skip_bad_images, channels, limit)
        return (a[:limit], b[:limit]) if limit else (a, b)

    # -- training ------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        a, b = batch
        if cfg.resolved_load_size != cfg.image_size or cfg.flip:
            a = jitter(a, cfg.resolved_load_size, cfg.image_size, cfg.flip)
            b = jitter(b, cfg.resolved_load_size, cfg.image_size, cfg.flip)
        x = place(to_tanh_range(a))
        y = place(to_tanh_range(b))
        loss = get_loss(cfg.gan_loss)
        with self.autocast():
            t = cycle_losses(self.g_ab, self.g_ba, x, y, cfg.lambda_cycle, cfg.lambda_identity)
            gan_b = loss.generator(self.d_b(self.augment(t["fake_b"])).float())
            gan_a = loss.generator(self.d_a(self.augment(t["fake_a"])).float())
        loss_g = gan_a + gan_b + t["cycle"] + t["identity"]
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self._g_params)
        # The discriminators see fakes from the history pool (detached: no gradient to the generators).
        pa = self.pool_a.query(t["fake_a"].detach())
        pb = self.pool_b.query(t["fake_b"].detach())
        with self.autocast():  # real and pooled fakes in one pass per discriminator (instance norm: exact)
            seen_a, seen_b = self.augment(torch.cat([x, pa])), self.augment(torch.cat([y, pb]))
            ra, fa = self.d_a(seen_a).float().split(len(x))
            rb, fb = self.d_b(seen_b).float().split(len(y))
        da = 0.5 * loss.discriminator(ra, fa)
        db = 0.5 * loss.discriminator(rb, fb)
        if loss.gp_weight:  # WGAN-GP: each discriminator's penalty on its own real/fake interpolates
            da = da + 0.5 * loss.penalty(self.d_a, seen_a[: len(x)], seen_a[len(x) :])
            db = db + 0.5 * loss.penalty(self.d_b, seen_b[: len(y)], seen_b[len(y) :])
        (da + db).backward(inputs=self._d_params)
        self.optimizers["generators"].step()
        self.optimizers["discriminators"].step()
        for s in self.schedulers.values():
            s.step()
        return {
            "loss_g": (gan_a + gan_b).detach(),
            "loss_cycle": t["cycle"].detach(),
            "loss_identity": t["identity"].detach(),
            "loss_d_a": da.detach(),
            "loss_d_b": db.detach(),
        }

    def extra_state(self) -> dict:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict) -> None:
        self.pool_a.load(state.get("pool_a", {}))
        self.pool_b.load(state.get("pool_b", {}))

    # -- use -----------------------------------------------------------------------------------
    @torch.no_grad()
    def translate_batch(self, images: torch.Tensor, to: str) -> torch.Tensor:
        """uint8 images of the other domain -> images of domain `to` in [0, 1]."""
        g = self.g_ab if to == "B" else self.g_ba
        with modes_kept(g):
            x = place(to_tanh_range(images.to(self.device)))
            return from_tanh_range(g.eval()(x))

    def preview(self) -> torch.Tensor:
        """Rows: A test images, their translation to B, B test images, their translation to A."""
        a, b = self.fixed
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        rows = [
            as_rgb(a.float().div(255)),
            as_rgb(self.translate_batch(a, "B").cpu()),
            as_rgb(b.float().div(255)),
            as_rgb(self.translate_batch(b, "A").cpu()),
        ]
        return torch.cat(rows)

    def inference_module(self) -> nn.Module:
        return self.g_ab.eval()

    def translator_module(self, to: str | None = None) -> nn.Module:
        """The generator translating to domain `to` (A or B; default B) in eval mode, on [-1, 1] images."""
        if to not in (None, "A", "B"):
            raise GankitError(f"--to {to}: expected A or B")
        return (self.g_ba if to == "A" else self.g_ab).eval()

    def translator(self, to: str | None = None):
        """(network, (size, input channels, output channels)) for `gankit translate --to A|B`."""
        to = to or "B"
        g = self.translator_module(to)
        cin, cout = (self.cfg.channels_a, self.cfg.channels_b)[:: 1 if to == "B" else -1]
        return (lambda t: g(place(t.to(self.device)))), (
            self.cfg.image_size,
            cin,
            cout,
        )

    def evaluate(
        self,
        run_dir,
        data: str | None = None,
        extractor: str | None = None,
        feature_precision: str = "fp32",
        **_,
    ) -> dict:
        """A panel of test images in both directions with their cycle reconstructions, the mean cycle
        L1 per direction (how well each image survives A->B->A and B->A->B), and FID/KID of each
        direction's translations against the real test images of the target domain."""
        from ..metrics.quality import RealSet, quality_line, translation_quality

        cfg = self.cfg
        if data is not None:
            cfg.data = data
        self.root = resolve_unpaired_root(cfg)
        a, b = self.test_images()
        split = domain_folders(self.root, "test")[0].name.removesuffix("A") or "all"
        run = Path(run_dir)
        res = {"test_a": len(a), "test_b": len(b)}
        tiles = []
        for name, imgs, to, back in (("A->B->A", a, "B", "A"), ("B->A->B", b, "A", "B")):
            fake = torch.cat(
                [self.translate_batch(imgs[k : k + 8], to).cpu() for k in range(0, len(imgs), 8)]
            )
            fake_u8 = (fake * 255).round().to(torch.uint8)
            rec = torch.cat(
                [self.translate_batch(fake_u8[k : k + 8], back).cpu() for k in range(0, len(imgs), 8)]
            )
            orig = imgs.float().div(255)
            res[f"cycle_l1_{name}"] = round((rec - orig).abs().mean().item(), 5)
            target = b if to == "B" else a
            real = RealSet(target, f"{Path(str(self.root)).name}:{split}{to}", split)
            res[f"quality_{to}"] = translation_quality(
                fake_u8, real, extractor, feature_precision, self.device
            )
            for i in range(min(4, len(imgs))):
                tiles += [as_rgb(orig[i : i + 1])[0], as_rgb(fake[i : i + 1])[0], as_rgb(rec[i : i + 1])[0]]
        panel = run / "evaluation" / "panel.png"
        viz.save_image(viz.make_grid(torch.stack(tiles), nrow=3), panel)
        res["panel"] = str(panel)
        write_json_atomic(run / "evaluation" / "report.json", res)
        res["lines"] = [
            f"{len(a)} A and {len(b)} B test images",
            f"  cycle L1 A->B->A {res['cycle_l1_A->B->A']:.4f}, B->A->B {res['cycle_l1_B->A->B']:.4f}",
            quality_line("A->B vs real B", res["quality_B"]),
            quality_line("B->A vs real A", res["quality_A"]),
            f"wrote {panel} (rows: image | translated | reconstructed)",
        ]
        return res
