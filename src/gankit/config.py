"""Run configuration: one dataclass per recipe, saved as JSON with every run.

Defaults are the seed's hyper-parameters. Field metadata drives the CLI: `help` is the option's
help, `model=True` marks keys that change the networks (a resumed run must keep them), and
`choices` restricts values. Recipes subclass TrainConfig in their own module.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .device import PRECISIONS
from .errors import GankitError

# Keys a resumed run may change: they only lengthen training or say where it runs / finds its data.
RESUMABLE_KEYS = {"epochs", "max_steps", "device", "data_dir", "sync_bn"}


def opt(default, help: str, model: bool = False, choices=None, cli: bool = True):
    """A config field with CLI metadata (`cli=False`: stored in the run, not a command-line option)."""
    return field(default=default, metadata={"help": help, "model": model, "choices": choices, "cli": cli})


@dataclass
class TrainConfig:
    """Options every recipe shares."""

    recipe: str = opt("", "recipe name")
    data: str = opt("", "dataset name or folder")
    data_dir: str | None = opt(None, "folder holding the dataset files already (skips the download)")
    out: str | None = opt(None, "run directory (default runs/<recipe>-<data>)")
    epochs: int = opt(1, "passes over the training data")
    max_steps: int | None = opt(None, "stop after this many optimisation steps (overrides --epochs)")
    batch_size: int = opt(64, "images per step")
    lr: float = opt(2e-4, "learning rate")
    seed: int = opt(0, "seeds every random draw: same seed + same device = same run")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = opt(
        "auto", "fp32, bf16 autocast, or auto (bf16 where it measures faster here)", choices=PRECISIONS
    )
    auto_precision: str | None = opt(
        None, "what --precision auto chose when the run started, as DEVICE_TYPE:fp32|bf16", cli=False
    )
    sync_bn: bool = opt(
        False, "under torchrun: batch-norm statistics over the global batch, not each process's share"
    )
    preview_every: int = opt(10, "write a sample grid every N epochs (and after the first and last)")
    checkpoint_every: int = opt(500, "save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = opt(3, "how many recent checkpoints to keep")
    log_every: int = opt(50, "log losses every N steps")
    skip_bad_images: bool = opt(False, "skip unreadable image files instead of stopping")
    eval_every: int = opt(
        0,
        "every N steps, log the recipe's quality metric (generators: FID of --eval-samples samples against "
        "training images) and keep the best checkpoint as checkpoints/best.safetensors (0 = off)",
    )
    diffaugment: str = opt(
        "auto",
        "differentiable augmentation of every image the discriminator sees: a comma list of color, "
        "translation, cutout, or none; auto = on for fewer than 10,000 training images trained on long "
        "enough for the discriminator to memorise them, as measured per recipe (DCGAN and cDCGAN: once "
        "it has been shown 300,000 real images at 64 px, e.g. 300 passes over 1,000 or 60 over 5,000; "
        "1.5 million at 28/32 px; see the own-data guide), else none",
    )
    eval_samples: int = opt(1000, "samples for --eval-every (small: quick, not comparable with papers)")
    extractor: str | None = opt(None, "local TorchScript FID Inception file (default: downloaded once)")

    def validate(self) -> None:
        """Raise GankitError naming the first nonsensical option."""
        positive = [
            "epochs",
            "batch_size",
            "preview_every",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise GankitError(f"--{flag(name)} {getattr(self, name)}: expected a positive integer")
        if self.eval_every < 0 or self.eval_samples < 10:
            raise GankitError(
                f"--eval-every {self.eval_every} / --eval-samples {self.eval_samples}: expected N >= 0 and "
                "at least 10 samples"
            )
        if self.diffaugment != "auto":
            from .nn.diffaugment import parse_policy

            try:
                parse_policy(self.diffaugment)
            except ValueError as e:
                raise GankitError(f"--diffaugment {self.diffaugment!r}: {e}") from None
        if self.max_steps is not None and self.max_steps <= 0:
            raise GankitError(f"--max-steps {self.max_steps}: expected a positive integer")
        if not self.lr > 0 or self.lr > 1:
            raise GankitError(f"--lr {self.lr}: expected a learning rate in (0, 1]")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise GankitError(
                    f"--{flag(f.name)} {getattr(self, f.name)!r}: expected one of "
                    f"{', '.join(map(str, choices))}"
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A stored config; options it predates take their `BEFORE` value (what runs did then), so a
        resumed old run trains exactly as it began."""
        names = {f.name for f in dataclasses.fields(cls)}
        before = {k: v for k, v in cls.BEFORE.items() if k not in d}
        return cls(**{**before, **{k: v for k, v in d.items() if k in names}})

    # Options added later -> the behaviour of runs stored before them (see from_dict).
    BEFORE: typing.ClassVar[dict] = {"diffaugment": "none"}

    def total_steps(self, per_epoch: int) -> int:
        """Optimisation steps the run makes: epochs x steps per epoch, capped by max_steps."""
        total = per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps else total

    def planned_passes(self, count: int, processes: int = 1) -> float:
        """Passes over `count` training images the run makes: --epochs, or fewer when --max-steps
        stops it first (`processes` data-parallel ranks each taking --batch-size per step)."""
        if not self.max_steps or not count:
            return float(self.epochs)
        return min(float(self.epochs), self.max_steps * self.batch_size * processes / count)

    @classmethod
    def model_keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("model")]


def flag(name: str) -> str:
    return name.replace("_", "-")


def field_type(cls: type, f: dataclasses.Field) -> type:
    """The plain Python type of a config field (Optional[X] -> X)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def load_config(run_dir: str | Path, config_classes: dict[str, type[TrainConfig]]) -> TrainConfig:
    """Read `run_dir/config.json` back into its recipe's config class."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise GankitError(f"{run_dir}: not a gankit run directory (no config.json)")
    try:
        d = json.loads(path.read_text())
        cls = config_classes[d["recipe"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise GankitError(f"{path}: not a gankit run config") from None
    return cls.from_dict(d)
