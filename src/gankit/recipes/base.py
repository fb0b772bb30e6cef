"""The contract every recipe implements (one file per recipe in this package).

A recipe is a trainable model family. To add one, write `recipes/NAME.py` with a `Recipe` subclass
decorated with `@register` and import it in `recipes/__init__.py`; nothing else changes (networks may
go in `nn/`). The engine, the CLI, the Python API and the contract tests (tests/test_recipe_contract.py)
pick it up from the registry. A subclass:

Declares (class attributes)
- `name`: the CLI name (`gankit train NAME`).
- `Config`: a `TrainConfig` dataclass; its defaults are the recipe's defaults, its fields the options.
- `data_format`: what `load_data` reads and returns (see DATA_FORMATS): the contract tests build tiny
  data in that format.
- `capabilities`: what a trained run offers beyond training, from CAPABILITIES; each one promises the
  method named there. The API and CLI ask `offers(...)`, never the recipe's name or `hasattr`.
- `diffaugment_auto(cfg)` (optional classmethod): (images, policy) where `--diffaugment auto` turns
  DiffAugment on for a small set once the run shows the discriminator at least that many real images
  (passes x set size); None (the default): never.
- `has_discriminator` (default True): False for a recipe without one (a classifier), where
  `--diffaugment` does not apply.
- `smoke_options`: options for a tiny run (a few steps on a few small images), used by the contract tests.
- `demo_options` (optional): the options of `gankit demo --recipe NAME` on the embedded data.
- A one-line class docstring: it is the recipe's line in `gankit train --help`.

Implements
- `load_data(cfg)` (classmethod): read the data, fill the config's data-dependent fields (size,
  channels, classes), return the object `attach_data` takes.
- `__init__(cfg, device)`: build networks, optimisers (`self.modules`, `self.optimizers`) from a
  *resolved* config alone, so a run can be rebuilt for inference without its data.
- `attach_data(data)`: set `self.batches` (len, batch_size, epoch(e, start) -> iterator of batches) and
  the LR schedulers (`self.schedulers`), which are built for `cfg.total_steps(len(batches))`: a resumed
  run given more epochs gets its schedule rebuilt for the new length (only the step count is restored).
- `train_step(batch) -> {name: scalar tensor}`: one optimisation step, without host syncs.
- `preview() -> (N, C, H, W) floats in [0, 1]` from fixed inputs; the networks' modes are unchanged.
- `inference_module()`: the network users want, in eval mode (every submodule).
- `extra_state()` / `load_extra_state(state)`: anything beyond modules, optimisers, schedulers and RNG
  that training depends on (e.g. CycleGAN's history pools), for exact resume.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..config import TrainConfig
from ..device import autocast_dtype
from ..engine import distributed
from ..errors import GankitError
from ..nn.diffaugment import diff_augment, parse_policy

# What `load_data` returns, by data format.
DATA_FORMATS = {
    "images": "an ImageSet (uint8 images, optional labels): a named dataset, IDX folder or image folder",
    "labelled": "an ImageSet with labels (-1 = unlabelled): a named dataset or one sub-folder per class",
    "aligned": "a PairList: A|B side-by-side files, or A/ and B/ folders of matching names",
    "unaligned": "an UnpairedData: two domains, trainA/ trainB/ (testA/ testB/) or A/ B/",
}

# Capability -> the method it promises.
CAPABILITIES = {
    "sample": "sample(n, seed) -> (n, C, H, W) images in [0, 1]; generator_module() -> the network "
    "(z[, class ids] -> [-1, 1] images, with .latent_dim)",
    "translate": "translator(to) -> (network on [-1, 1] batches, (size, in channels, out channels)); "
    "translator_module(to) -> the bare network",
    "classify": "classifier_spec() -> ClassifierSpec; classify(paths, skip_bad) -> [{path, label, ...}]",
    "evaluate": "evaluate(run_dir, data) -> report dict with 'lines' (also written to run_dir/evaluation)",
    "monitor": "monitor() -> (metric name, value, lower is better) during training, for --eval-every",
    "conditional": "sample(n, seed, labels=...) draws the classes asked for; cfg.class_names names them",
    "two_way": "translator(to) for to in A and B: the run translates in both directions",
}


@dataclass
class ClassifierSpec:
    """A run's classifier as the attacks need it: logits from images normalised as in training."""

    module: nn.Module  # (N, C, size, size) normalised images -> logits
    mean: list[float]  # per channel, in [0, 1] pixel scale
    std: list[float]
    input_size: int
    channels: int
    class_names: list[str]


class Recipe:
    """A trainable model family: see the module docstring for the contract."""

    name: ClassVar[str]
    Config: ClassVar[type[TrainConfig]]
    data_format: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    smoke_options: ClassVar[dict] = {}
    demo_options: ClassVar[dict | None] = None
    preview_columns: ClassVar[int] = 4  # images per row of the preview grid
    has_discriminator: ClassVar[bool] = True  # False: --diffaugment (of discriminator inputs) does not apply
    SMALL_DATA: ClassVar[int] = 10_000  # --diffaugment auto: "small" is fewer training images than this

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        if cfg.precision != "auto":  # an explicit choice fails here, at once, where it cannot run
            _ = self.amp_dtype
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.batches = None

    @classmethod
    def summary(cls) -> str:
        """The recipe's one-line description (first line of its class docstring)."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0]

    @classmethod
    def offers(cls, capability: str) -> bool:
        return capability in cls.capabilities

    def require(self, capability: str, command: str) -> None:
        """Raise a one-line error unless this recipe offers `capability` (for `command`)."""
        if not self.offers(capability):
            from . import RECIPES

            able = sorted(n for n, c in RECIPES.items() if c.offers(capability))
            raise GankitError(
                f"{command}: a {self.name} run cannot {capability} (recipes that can: {', '.join(able)})"
            )

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: TrainConfig):
        """Load the training data (see `data_format`) and fill the config's data-dependent fields."""
        raise NotImplementedError

    @classmethod
    def diffaugment_auto(cls, cfg: TrainConfig) -> tuple[float, str] | None:
        """(images, policy): `--diffaugment auto` turns `policy` on when a set of fewer than
        SMALL_DATA images is trained on until the discriminator has been shown at least `images` real
        images (passes x set size), the point from which it was measured to pay for this recipe and
        configuration; None: never (the default)."""
        return None

    @classmethod
    def resolve_diffaugment(cls, cfg: TrainConfig, count: int) -> str | None:
        """Replace `--diffaugment auto` by what it means for `count` training images and the run's
        length; return a note to show the user when that turned augmentation on (None otherwise)."""
        if cfg.diffaugment != "auto":
            return None
        rule = cls.diffaugment_auto(cfg) if count < cls.SMALL_DATA else None
        passes = cfg.planned_passes(count, distributed.world_size())
        if rule is None or passes * count < rule[0]:
            cfg.diffaugment = "none"
            return None
        cfg.diffaugment = rule[1]
        return (
            f"{count} training images (fewer than {cls.SMALL_DATA:,}), each seen ~{passes:,.0f} times "
            f"(from {rule[0] / count:,.0f} on, the discriminator memorises them): DiffAugment {rule[1]} "
            "is on (--diffaugment none turns it off)"
        )

    @functools.cached_property
    def augmentation(self) -> tuple[str, ...]:
        """The run's DiffAugment policy (empty: off)."""
        return parse_policy(None if self.cfg.diffaugment == "auto" else self.cfg.diffaugment)

    def augment(self, images: torch.Tensor, groups=None) -> torch.Tensor:
        """What the discriminator sees of `images`: DiffAugment'ed when the run asks for it (see
        gankit.nn.diffaugment), drawn per sample on the device; unchanged otherwise."""
        return diff_augment(images, self.augmentation, groups)

    def attach_data(self, data) -> None:
        """Set `self.batches` and the schedulers (built for the run's total steps)."""
        raise NotImplementedError

    # -- training ------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def preview(self) -> torch.Tensor:
        """Sample images (N, C, H, W) in [0, 1] from fixed inputs, for the run's preview grids."""
        raise NotImplementedError

    def epoch_metrics(self) -> dict:
        """Scalars logged after each preview epoch (e.g. a test accuracy); none by default."""
        return {}

    def run_files(self) -> dict:
        """JSON documents written into the run directory when training starts ({file name: object})."""
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- use -----------------------------------------------------------------------------------
    def inference_module(self) -> nn.Module:
        """The trained network users want (e.g. the generator), in eval mode."""
        raise NotImplementedError

    @functools.cached_property
    def amp_dtype(self) -> torch.dtype | None:
        """The training autocast dtype; `auto` is resolved (measured, cached) on first use only, so a
        run loaded for inference never pays for the measurement."""
        return autocast_dtype(self.cfg.precision, self.device, self.cfg.auto_precision)

    def autocast(self):
        """bf16 autocast when the config asks for it (or `auto` and it pays here), else a no-op."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
