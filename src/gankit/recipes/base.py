"""The contract every recipe implements (one file per recipe in this package)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from ..config import TrainConfig
from ..data import ImageSet
from ..device import autocast_dtype
from ..errors import GankitError


class Recipe:
    """A trainable model family.

    Subclasses set `name` and `Config`, build their networks and optimisers in __init__ from a
    *resolved* config (no data needed, so a run can be reloaded for inference), and implement
    `load_data`, `train_step`, `preview` and `inference_module`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[TrainConfig]]

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}
        self.batches = None

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: TrainConfig) -> ImageSet:
        """Load the training data and fill the config's data-dependent fields (size, channels)."""
        raise NotImplementedError

    def attach_data(self, data: ImageSet) -> None:
        """Set `self.batches` (an object with __len__, batch_size and epoch(e, start))."""
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

    def evaluate(self, run_dir, data: str | None = None) -> dict:
        """Evaluate the trained model (writes files into the run directory); see each recipe."""
        raise GankitError(f"gankit evaluate: {self.name} runs have no evaluation yet")

    def classify(self, paths: list, skip_bad: bool = False) -> list[dict]:
        """Classify image files; only recipes that train a classifier implement it."""
        raise GankitError(f"gankit classify: a {self.name} run has no classifier (train an ssgan run)")

    def autocast(self):
        """bf16 autocast when the config asks for it (or `auto` and it pays here), else a no-op."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
