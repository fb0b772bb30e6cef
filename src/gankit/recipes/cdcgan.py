"""Conditional DCGAN: generation by class, from a labelled dataset or a folder of class sub-folders.

The DCGAN networks of the run's size, conditioned on the class: the generator reads a learned class
embedding beside its noise, the discriminator has a projection head (Miyato & Koyama 2018; see
gankit.nn.cdcgan). Classes come from a named dataset's labels or from a folder's sub-folder names
(sorted; an `unlabeled/` folder is ignored, said so). Fake batches get classes drawn uniformly.
Defaults are the DCGAN paper's optimiser settings (Adam 2e-4, beta1 0.5) at batch 64; DiffAugment on
request (`--diffaugment`). The preview grid is class by row.

Within-class diversity. Conditioned this way, the generator learns to ignore its noise: every z of a
class gives nearly the same image (measured: per-pixel spread across z 0.12x the real class's after 1,000
steps, FID 193 after 3,000, each class recognised 100%). The fix is the mode-seeking term of Mao et al.
("Mode Seeking GANs for Diverse Image Synthesis", CVPR 2019), on by default with their weight 1: each
fake batch is two halves with the same classes and different noise, and the generator's loss gets
`weight / (mean|G(z1, y) - G(z2, y)| / mean|z1 - z2| + 1e-5)`, which is large when different noise gives
the same image (`--mode-seeking 0` turns it off; runs stored before the option had it off).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..config import opt
from ..data import ImageSet, is_known_dataset, load_dataset
from ..data.batches import InMemoryBatches
from ..data.images import UNLABELED, load_labelled_folder
from ..data.transforms import from_tanh_range
from ..errors import GankitError
from ..nn.cdcgan import ConditionalGenerator, ProjectionDiscriminator
from . import register
from .dcgan import DCGAN, DCGANConfig

PREVIEW_COLUMNS = 8
PREVIEW_ROWS = 16  # classes shown in the preview grid (the first ones, when a run has more)


@dataclass
class CDCGANConfig(DCGANConfig):
    recipe: str = "cdcgan"
    data: str = "fashion-mnist"
    epochs: int = 30
    batch_size: int = 64
    lr: float = opt(2e-4, "learning rate of both Adam optimisers")
    beta1: float = opt(0.5, "Adam beta1 (the DCGAN paper's 0.5)")
    embed_dim: int = opt(32, "length of the generator's class embedding", model=True)
    num_classes: int | None = opt(None, "number of classes (default: from the data)", model=True)
    class_names: list[str] = field(
        default_factory=list, metadata={"help": "class names, by id", "model": True, "cli": False}
    )
    mode_seeking: float = opt(
        1.0,
        "weight of the mode-seeking term (Mao et al. 2019) that keeps the samples of a class diverse "
        "(0 = off)",
    )
    preview_every: int = 5
    BEFORE: ClassVar[dict] = {**DCGANConfig.BEFORE, "mode_seeking": 0.0}

    def validate(self) -> None:
        super().validate()
        if not self.mode_seeking >= 0:
            raise GankitError(f"--mode-seeking {self.mode_seeking}: expected a weight >= 0")
        if self.embed_dim <= 0:
            raise GankitError(f"--embed-dim {self.embed_dim}: expected a positive integer")
        if self.num_classes is not None and self.num_classes < 2:
            raise GankitError(f"--num-classes {self.num_classes}: expected at least 2 classes")


@register
class CDCGAN(DCGAN):
    """Class-conditional generation: DCGAN with a class embedding and a projection discriminator."""

    name = "cdcgan"
    Config = CDCGANConfig
    data_format = "labelled"
    capabilities = DCGAN.capabilities | {"conditional"}
    smoke_options = dict(epochs=2, batch_size=16, ema=0.9, checkpoint_every=3)
    demo_options = dict(
        data="fashion-mnist-small",
        epochs=30,
        preview_every=5,
        log_every=20,
        checkpoint_every=500,
    )

    preview_columns = PREVIEW_COLUMNS

    def __init__(self, cfg: CDCGANConfig, device: torch.device):
        self.preview_count = min(cfg.num_classes or 2, PREVIEW_ROWS) * PREVIEW_COLUMNS
        super().__init__(cfg, device)
        rows = self.preview_count // PREVIEW_COLUMNS  # a class-by-row grid
        self.fixed_conditions = (torch.arange(rows).repeat_interleave(PREVIEW_COLUMNS).to(device),)

    @staticmethod
    def networks(cfg: CDCGANConfig) -> tuple[nn.Module, nn.Module]:
        k, c, s = cfg.num_classes or 2, cfg.channels, cfg.image_size
        return ConditionalGenerator(cfg.latent_dim, k, c, s, cfg.embed_dim), ProjectionDiscriminator(k, c, s)

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: CDCGANConfig) -> ImageSet:
        if cfg.image_size is None:
            cfg.image_size = 28 if is_known_dataset(cfg.data) else 64
        if is_known_dataset(cfg.data):
            data = load_dataset(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels)
            if data.labels is None:
                raise GankitError(f"--data {cfg.data}: has no labels; a conditional GAN needs classes")
        else:
            data, extra = load_labelled_folder(cfg.data, cfg.image_size, cfg.channels, cfg.skip_bad_images)
            if extra is not None:
                print(
                    f"gankit: note: {extra.source}: {len(extra)} images without a class are not used "
                    f"(a conditional GAN trains on the class sub-folders only; '{UNLABELED}' holds none)",
                    file=sys.stderr,
                )
        cfg.channels = data.channels
        n_cls = int(data.labels.max()) + 1
        names = list(data.classes or [])
        cfg.num_classes = cfg.num_classes or (len(names) if len(names) >= n_cls else n_cls)
        if n_cls > cfg.num_classes:
            raise GankitError(f"--num-classes {cfg.num_classes}: the data has {n_cls} classes")
        cfg.class_names = names[: cfg.num_classes] if names else [str(i) for i in range(cfg.num_classes)]
        return data

    def attach_data(self, data: ImageSet) -> None:
        self.batches = InMemoryBatches(
            data.images, self.cfg.batch_size, self.cfg.seed, self.device, labels=data.labels
        )
        self.train_images, self.train_labels = data.images, data.labels

    # -- training: DCGAN's step, with the batch's classes and uniformly drawn ones for the fakes --
    def draw_classes(self, n: int) -> torch.Tensor:
        """Uniform classes; with the mode-seeking term, the second half repeats the first (pairs)."""
        if self.cfg.mode_seeking > 0 and n >= 2:
            half = torch.randint(0, self.cfg.num_classes, (n // 2,), device=self.device)
            odd = torch.randint(0, self.cfg.num_classes, (n % 2,), device=self.device)
            return torch.cat([half, half, odd])
        return torch.randint(0, self.cfg.num_classes, (n,), device=self.device)

    def standing_conditions(self, n: int, g: torch.Generator) -> tuple:
        """Uniform classes from `g` for the EMA generator's standing statistics."""
        return (torch.randint(0, self.cfg.num_classes, (n,), generator=g).to(self.device),)

    def generator_regulariser(self, z: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        if self.cfg.mode_seeking <= 0 or len(z) < 2:
            return None
        return self.cfg.mode_seeking * mode_seeking_loss(z, fake)

    # -- use -----------------------------------------------------------------------------------
    def class_ids(self, classes) -> torch.Tensor:
        """Class names or ids (one, or a list) -> a tensor of ids; a one-line error naming the run's
        classes for anything else."""
        names = self.cfg.class_names
        if isinstance(classes, torch.Tensor) and not classes.is_floating_point() and classes.ndim == 1:
            if len(classes) and not 0 <= int(classes.min()) <= int(classes.max()) < self.cfg.num_classes:
                raise GankitError(f"labels: class ids must lie in 0..{self.cfg.num_classes - 1}")
            return classes.to(torch.int64).cpu()
        items = classes if isinstance(classes, (list, tuple, torch.Tensor)) else [classes]
        ids = []
        for c in items:
            c = c.item() if isinstance(c, torch.Tensor) else c
            if isinstance(c, str) and c in names:
                ids.append(names.index(c))
            elif isinstance(c, int) or (isinstance(c, str) and c.lstrip("-").isdigit()):
                i = int(c)
                if not 0 <= i < self.cfg.num_classes:
                    raise GankitError(
                        f"--class {c}: expected a class id 0..{self.cfg.num_classes - 1} or a name"
                        f" ({', '.join(names)})"
                    )
                ids.append(i)
            else:
                raise GankitError(f"--class {c!r}: not a class of this run (classes: {', '.join(names)})")
        return torch.tensor(ids, dtype=torch.int64)

    def sample(self, n: int, seed: int = 0, labels=None) -> torch.Tensor:
        """`n` images in [0, 1] of the classes `labels` (one name/id for all, or one per image; default:
        every class equally often, in class order), reproducibly from `seed`."""
        if labels is None:
            ids = torch.arange(n) * self.cfg.num_classes // n
        else:
            ids = self.class_ids(labels)
            if len(ids) == 1:
                ids = ids.expand(n)
            elif len(ids) != n:
                raise GankitError(f"labels: {len(ids)} given for {n} images (give one, or one per image)")
        return sample_conditional(self.inference_module(), ids, seed)

    def real_set(self, data: str | None = None):
        """The real images with their labels (per-class FID): the test split of a named dataset, else a
        labelled folder (`data`, or the training folder: said so)."""
        from ..metrics.quality import RealSet

        cfg = self.cfg
        source = data or cfg.data
        if is_known_dataset(source):
            data_dir = cfg.data_dir if source == cfg.data else None
            ds = load_dataset(source, "test", data_dir, cfg.image_size, cfg.channels)
            split = "test"
        else:
            ds = load_labelled_folder(source, cfg.image_size, cfg.channels)[0]
            split = "train" if source == cfg.data else "given"
        name = f"{source}:{split}" if is_known_dataset(source) else source
        return RealSet(ds.images, name, split, ds.labels, cfg.class_names)


@torch.no_grad()
def sample_conditional(generator: nn.Module, labels: torch.Tensor, seed: int = 0, batch_size: int = 256):
    """One image in [0, 1] per class id in `labels`, reproducibly from `seed` (the same latents as an
    unconditional draw of the same seed)."""
    device = next(generator.parameters()).device
    z = torch.randn(len(labels), generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    generator.eval()
    parts = zip(z.split(batch_size), labels.split(batch_size))
    return torch.cat([from_tanh_range(generator(a.to(device), b.to(device))).cpu() for a, b in parts])


def mode_seeking_loss(z: torch.Tensor, fake: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mao et al.'s mode-seeking term for a batch whose first n//2 samples share their conditions with
    the next n//2: 1 / (mean|x1 - x2| / mean|z1 - z2| + eps). Large when different noise gives the same
    image; the generator lowers it by letting its noise change the image."""
    h = len(z) // 2
    image_gap = (fake[:h].float() - fake[h : 2 * h].float()).abs().mean()
    latent_gap = (z[:h] - z[h : 2 * h]).abs().mean()
    return 1.0 / (image_gap / latent_gap + eps)
