"""Adversarial training: a classifier robust within an epsilon ball.

Methods, each on the network's inputs in [0, 1] pixel scale (epsilon too):
- `pgd` (Madry et al. 2018): train on PGD adversarial examples (random start, `--attack-steps`
  steps of `--step-size`, default 2.5 eps / steps).
- `trades` (Zhang et al. 2019): cross-entropy on the clean images plus `--beta` times the KL
  divergence between the predictions on the clean and the adversarial image, the adversarial image
  found by maximising that KL (start x + 0.001 N(0, 1)).
- `fgsm` (Wong et al. 2020, "Fast is better than free"): one FGSM step of 1.25 eps from a uniform
  random start. Its known failure, catastrophic overfitting (PGD accuracy collapsing to zero within
  an epoch), is guarded as the paper does it: PGD robust accuracy on a validation slice after every
  epoch, and the best checkpoint kept (`checkpoints/best.safetensors`).
Adversarial examples are searched with the network in eval mode (batch norm on its running
statistics), as TRADES does, and the update is taken in training mode.

Options a practitioner expects: epsilon warm-up (linear from 0 over a fraction of the run), cyclic
(Wong et al.), piecewise (Madry et al., Rice et al.), linear-decay or constant learning rates, SGD or
Adam, an EMA of the weights, attack steps and step size, Linf or L2.

The join with the GAN half (Carmon et al. 2019; Gowal et al. 2021): `--unlabelled rest|DATA` images
pseudo-labelled by a gankit classifier run (`--pseudo-labeller RUN`: robust self-training), and
`--generated RUN` images drawn once from a gankit class-conditional generator (cdcgan), each mixed
into every batch at `--unlabelled-ratio` / `--generated-ratio` of it.

Checkpoints are selected on a validation split held out of the training data (robust accuracy under
PGD); the test split is read by `gankit evaluate` alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TrainConfig, opt
from ..data import ImageSet, is_known_dataset, load_dataset
from ..data.batches import MixedBatches
from ..data.images import load_labelled_folder
from ..data.subsets import balanced_subset, holdout, nonempty_classes
from ..data.transforms import random_flip_shift
from ..engine.optim import adam
from ..engine.schedules import LR_SCHEDULES, lr_schedule
from ..errors import GankitError
from ..nn import robust as networks
from ..nn.modes import modes_kept
from . import register
from .base import ClassifierSpec, Recipe
from .common import prediction_rows, split_record, update_ema

METHODS = ("pgd", "trades", "fgsm")
NORMS = ("linf", "l2")


@dataclass
class RobustConfig(TrainConfig):
    recipe: str = "robust"
    data: str = "mnist"
    method: str = opt(
        "pgd", "pgd (Madry et al.), trades (Zhang et al.) or fgsm (Wong et al.'s fast FGSM)", choices=METHODS
    )
    eps: float | None = opt(
        None,
        "training epsilon in [0, 1] pixel scale (default 0.3 for MNIST, 0.1 for other gray data, "
        "8/255 for colour; 0: standard training, a twin to compare with)",
    )
    norm: str = opt("linf", "threat model: linf or l2", choices=NORMS)
    attack_steps: int | None = opt(None, "steps of the training attack (default 10; fgsm: 1)")
    step_size: float | None = opt(
        None, "its step size (default 2.5 eps / steps; fgsm 1.25 eps; trades eps / 4)"
    )
    beta: float = opt(6.0, "trades: weight of the robustness (KL) term")
    eps_warmup: float = opt(0.0, "fraction of the run over which epsilon grows linearly from 0 (0 = off)")
    lr_schedule: str = opt(
        "cyclic",
        "cyclic (up to --lr at 0.4 of the run, down to 0 at its end), piecewise (x0.1 at half and "
        "three quarters), linear-decay or constant",
        choices=(*LR_SCHEDULES, "constant"),
    )
    optimizer: str | None = opt(
        None,
        "sgd (momentum 0.9) or adam (default: sgd for preact-resnet18, else adam)",
        choices=("sgd", "adam"),
    )
    lr: float | None = opt(None, "peak learning rate (default 0.1 with sgd, 1e-3 with adam)")
    weight_decay: float | None = opt(None, "weight decay (default 5e-4 with sgd, 0 with adam)")
    epochs: int = opt(10, "passes over the labelled training images")
    batch_size: int = opt(128, "images per step (labelled, pseudo-labelled and generated together)")
    ema: float = opt(0.0, "decay of an average of the weights used for evaluation (0 = off; e.g. 0.999)")
    augment: str | None = opt(
        None,
        "random augmentation: none, translate (+-2 px) or flip+translate (+-4 px; default for colour)",
        choices=("none", "translate", "flip+translate"),
    )
    network: str | None = opt(
        None,
        "madry-cnn, preact-resnet18 or ssgan (the semi-supervised GAN's classifier); default: madry-cnn for "
        "gray images, preact-resnet18 for colour",
        model=True,
        choices=tuple(networks.NETWORKS),
    )
    labels: int | None = opt(None, "labelled images, balanced over classes (default: every training image)")
    unlabelled: str | None = opt(
        None,
        "images to pseudo-label: 'rest' (the training images beyond --labels), a dataset name or an "
        "image folder",
    )
    pseudo_labeller: str | None = opt(
        None, "a gankit classifier run (ssgan, robust) that labels --unlabelled"
    )
    unlabelled_ratio: float = opt(0.5, "share of each batch drawn from the pseudo-labelled images")
    generated: str | None = opt(
        None, "a gankit class-conditional generator run (cdcgan) whose samples join the batches"
    )
    generated_ratio: float = opt(0.5, "share of each batch drawn from the generated images")
    generated_count: int | None = opt(
        None, "generated images drawn once at the start (default: as many as the training set)"
    )
    validation: int | None = opt(
        None, "training images held out for selection (default 5000 for named datasets, 1/12 of a folder)"
    )
    val_count: int = opt(1000, "validation images attacked (PGD) after each epoch for the robust accuracy")
    val_steps: int = opt(10, "PGD steps of that validation attack")
    eval_every: int = opt(
        -1, "steps between validation checks that keep the best checkpoint (-1: once per epoch, 0: off)"
    )
    image_size: int | None = opt(None, "image size (default 28 for MNIST-family data, else 32)", model=True)
    channels: int | None = opt(None, "1 or 3 (default: from the data)", model=True)
    num_classes: int | None = opt(None, "number of classes (from the data)", model=True)
    class_names: list | None = opt(None, "class names (from the data)", cli=False)
    diffaugment: str = opt("none", "not used: a classifier has no discriminator", cli=False)
    preview_every: int = 1
    checkpoint_every: int = 500

    def validate(self) -> None:
        lr, every = self.lr, self.eval_every
        # The shared checks, on what these stand for: a learning rate, an evaluation period.
        self.lr, self.eval_every = (1e-3 if lr is None else lr), max(every, 0)
        try:
            super().validate()
        finally:
            self.lr, self.eval_every = lr, every
        if self.diffaugment not in ("none", "auto"):
            raise GankitError(
                f"--diffaugment {self.diffaugment}: a robust classifier has no discriminator to augment for"
            )
        if self.eps is not None and (not 0 <= self.eps <= (1 if self.norm == "linf" else 1e3)):
            raise GankitError(
                f"--eps {self.eps}: expected a value in [0, 1] (pixel scale)"
                if self.norm == "linf"
                else f"--eps {self.eps}: expected a non-negative L2 radius"
            )
        for name in ("attack_steps", "val_steps", "val_count", "generated_count", "labels"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise GankitError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
        if self.step_size is not None and self.step_size <= 0:
            raise GankitError(f"--step-size {self.step_size}: expected a positive step")
        if self.beta < 0:
            raise GankitError(f"--beta {self.beta}: expected a weight >= 0")
        if not 0 <= self.eps_warmup < 1:
            raise GankitError(f"--eps-warmup {self.eps_warmup}: expected a fraction in [0, 1)")
        if not 0.0 <= self.ema < 1.0:
            raise GankitError(f"--ema {self.ema}: expected a decay in [0, 1)")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise GankitError(f"--weight-decay {self.weight_decay}: expected a value >= 0")
        if self.eval_every < -1:
            raise GankitError(
                f"--eval-every {self.eval_every}: expected -1 (once per epoch), 0 (off) or N steps"
            )
        for name in ("unlabelled_ratio", "generated_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise GankitError(
                    f"--{name.replace('_', '-')} {getattr(self, name)}: expected a share in (0, 1)"
                )
        used = (self.unlabelled_ratio if self.unlabelled else 0) + (
            self.generated_ratio if self.generated else 0
        )
        if used >= 1:
            raise GankitError(
                f"--unlabelled-ratio + --generated-ratio = {used:g}: leave some of each batch to the "
                "labelled images"
            )
        if bool(self.unlabelled) != bool(self.pseudo_labeller):
            raise GankitError(
                "--unlabelled and --pseudo-labeller go together: the images and the run that labels them"
            )
        if self.validation is not None and self.validation < 0:
            raise GankitError(f"--validation {self.validation}: expected a number of images >= 0")

    def resolve(self) -> None:
        """Fill the defaults that depend on the data and the network (after load_data)."""
        if self.network is None:
            self.network = "madry-cnn" if self.channels == 1 else "preact-resnet18"
        if self.eps is None:
            self.eps = 0.3 if self.data in ("mnist",) else (0.1 if self.channels == 1 else 8 / 255)
        if self.attack_steps is None:
            self.attack_steps = 1 if self.method == "fgsm" else 10
        if self.step_size is None:
            self.step_size = {"fgsm": 1.25 * self.eps, "trades": self.eps / 4}.get(
                self.method, 2.5 * self.eps / self.attack_steps
            )
        if self.optimizer is None:
            self.optimizer = "sgd" if self.network == "preact-resnet18" else "adam"
        if self.lr is None:
            self.lr = 0.1 if self.optimizer == "sgd" else 1e-3
        if self.weight_decay is None:
            self.weight_decay = 5e-4 if self.optimizer == "sgd" else 0.0
        if self.augment is None:
            self.augment = "flip+translate" if self.channels == 3 else "none"


@register
class Robust(Recipe):
    """An adversarially robust classifier: PGD, TRADES or fast FGSM training, optionally on GAN data."""

    name = "robust"
    Config = RobustConfig
    data_format = "labelled"
    has_discriminator = False
    capabilities = frozenset({"classify", "evaluate", "monitor"})
    smoke_options = dict(
        epochs=2,
        batch_size=32,
        checkpoint_every=3,
        attack_steps=2,
        validation=32,
        val_count=16,
        val_steps=2,
        eps=0.1,
    )

    def __init__(self, cfg: RobustConfig, device: torch.device):
        super().__init__(cfg, device)
        cfg.resolve()
        self.net = networks.build(cfg.network, cfg.num_classes, cfg.channels, cfg.image_size).to(device)
        self.modules = {"classifier": self.net}
        if cfg.optimizer == "sgd":
            self.optimizers = {
                "classifier": torch.optim.SGD(
                    self.net.parameters(), cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
                )
            }
        else:
            o = adam(self.net.parameters(), cfg.lr, (0.9, 0.999))
            for g in o.param_groups:
                g["weight_decay"] = cfg.weight_decay
            self.optimizers = {"classifier": o}
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
            self.modules["ema_classifier"] = self.ema
        self.steps_done = 0
        self.total_steps = 1
        self.val_data: ImageSet | None = None
        self._val_cache: tuple[int, dict] | None = None
        self.sources: dict[str, int] = {}

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: RobustConfig) -> ImageSet:
        if cfg.image_size is None:
            cfg.image_size = 28 if is_known_dataset(cfg.data) else 32
        if is_known_dataset(cfg.data):
            data = load_dataset(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels)
        else:
            data = load_labelled_folder(cfg.data, cfg.image_size, cfg.channels, cfg.skip_bad_images)[0]
        if data.labels is None:
            raise GankitError(
                f"--data {cfg.data}: has no labels (a labelled folder has one sub-folder per class)"
            )
        cfg.channels = data.channels
        names = list(data.classes) if data.classes else []
        n_cls = int(data.labels.max()) + 1
        cfg.num_classes = cfg.num_classes or (len(names) if names and len(names) >= n_cls else n_cls)
        cfg.class_names = names[: cfg.num_classes] if names else [str(i) for i in range(cfg.num_classes)]
        cfg.resolve()
        return data

    @classmethod
    def load_eval_data(cls, cfg: RobustConfig, data: str | None = None) -> ImageSet | None:
        """The test split of a named dataset, or a labelled folder given as `data`."""
        source = data or cfg.data
        if is_known_dataset(source):
            return load_dataset(
                source, "test", cfg.data_dir if not data else None, cfg.image_size, cfg.channels
            )
        if data:
            return load_labelled_folder(data, cfg.image_size, cfg.channels, cfg.skip_bad_images)[0]
        return None

    def attach_data(self, data: ImageSet) -> None:
        cfg = self.cfg
        if cfg.validation is None:
            cfg.validation = (
                min(5000, len(data) // 12) if is_known_dataset(cfg.data) else max(1, len(data) // 12)
            )
        val = holdout(data.labels, cfg.validation)
        free = torch.ones(len(data), dtype=torch.bool)
        free[val] = False
        labels = torch.where(free, data.labels, torch.full_like(data.labels, -1))
        if cfg.labels:
            classes = nonempty_classes(labels, cfg.num_classes, cfg.class_names)
            idx = balanced_subset(labels, cfg.labels, cfg.num_classes, cfg.seed, classes)
        else:
            idx = torch.nonzero(free).flatten()
        if not len(idx):
            raise GankitError(f"{cfg.data}: no labelled training images are left beside the validation split")
        self.labelled_indices, self.validation_indices = idx, val
        sources = [(data.images[idx], data.labels[idx])]
        shares = [1.0]
        self.sources = {"labelled": len(idx)}
        if cfg.unlabelled:
            rest = free.clone()
            rest[idx] = False
            x = self._unlabelled_images(data, rest)
            sources.append((x, self._pseudo_labels(x)))
            shares.append(cfg.unlabelled_ratio)
            self.sources["pseudo-labelled"] = len(x)
        if cfg.generated:
            x, y = self._generated(len(data))
            sources.append((x, y))
            shares.append(cfg.generated_ratio)
            self.sources["generated"] = len(x)
        sizes = [max(1, round(cfg.batch_size * s)) for s in shares[1:]]
        sizes.insert(0, max(1, cfg.batch_size - sum(sizes)))
        self.batches = MixedBatches(sources, sizes, cfg.seed, self.device)
        self.total_steps = cfg.total_steps(len(self.batches))
        if cfg.eval_every == -1:
            cfg.eval_every = len(self.batches) if len(val) else 0
        if cfg.eval_every and not len(val):
            raise GankitError(
                f"--eval-every {cfg.eval_every}: selects on a validation split; --validation is 0"
            )
        sched = lr_schedule(self.optimizers["classifier"], cfg.lr_schedule, self.total_steps)
        self.schedulers = {"classifier": sched} if sched is not None else {}
        self.val_data = (
            ImageSet(data.images[val], data.labels[val], data.classes, data.source) if len(val) else None
        )

    def _unlabelled_images(self, data: ImageSet, rest: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.unlabelled == "rest":
            x = data.images[rest]
            if not len(x):
                raise GankitError(
                    "--unlabelled rest: no training images are left beyond --labels and the validation split"
                )
            return x
        return load_dataset(
            cfg.unlabelled, "train", None, cfg.image_size, cfg.channels, cfg.skip_bad_images
        ).images

    def _pseudo_labels(self, images: torch.Tensor) -> torch.Tensor:
        """The --pseudo-labeller run's predictions for `images` (uint8)."""
        from ..attacks.classifiers import load_classifier

        clf = load_classifier(self.cfg.pseudo_labeller).eval()
        k = clf.num_classes
        if k != self.cfg.num_classes:
            raise GankitError(
                f"--pseudo-labeller {self.cfg.pseudo_labeller}: predicts {k} classes, "
                f"the data has {self.cfg.num_classes}"
            )
        with torch.no_grad():
            return torch.cat([clf(b.float().div(255)).argmax(1).cpu() for b in images.split(500)])

    def _generated(self, default_count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images drawn once from the --generated run, every class equally often, from --seed."""
        from ..api import load_recipe

        cfg = self.cfg
        try:
            gen = load_recipe(cfg.generated, "cpu")
        except GankitError as e:
            raise GankitError(f"--generated {cfg.generated}: {e}") from None
        if not gen.offers("conditional"):
            raise GankitError(
                f"--generated {cfg.generated}: a {gen.name} run is not a class-conditional generator "
                "(train cdcgan)"
            )
        if gen.cfg.num_classes != cfg.num_classes or (gen.cfg.channels, gen.cfg.image_size) != (
            cfg.channels,
            cfg.image_size,
        ):
            raise GankitError(
                f"--generated {cfg.generated}: draws {gen.cfg.num_classes} classes of "
                f"{gen.cfg.channels}x{gen.cfg.image_size} px "
                f"images; this run trains on {cfg.num_classes} classes of {cfg.channels}x{cfg.image_size} px"
            )
        n = cfg.generated_count or default_count
        ids = torch.arange(n) % cfg.num_classes
        images = torch.cat(
            [gen.sample(len(part), cfg.seed + i, labels=part) for i, part in enumerate(ids.split(2000))]
        )
        return images.mul(255).round().clamp(0, 255).to(torch.uint8), ids

    def run_files(self) -> dict:
        files = {
            "labelled_indices.json": split_record(
                self.cfg, self.labelled_indices, "labelled training images"
            ),
            "sources.json": {"images": self.sources, "batch": dict(zip(self.sources, self.batches.sizes))},
        }
        if len(self.validation_indices):
            files["validation_indices.json"] = split_record(
                self.cfg, self.validation_indices, "held out: never trained on; checkpoint selection only"
            )
        return files

    # -- training ------------------------------------------------------------------------------
    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1  # the networks see [-1, 1]; attacks and epsilon live in [0, 1]

    def current_eps(self) -> float:
        warm = self.cfg.eps_warmup * self.total_steps
        if warm <= 0:
            return self.cfg.eps
        return self.cfg.eps * min(1.0, (self.steps_done + 1) / warm)

    def _project(self, delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        if self.cfg.norm == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta * (eps / n).clamp(max=1.0)
        return (x + delta).clamp(0, 1) - x

    def _ascend(self, delta: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
        if self.cfg.norm == "linf":
            return delta + step * grad.sign()
        return delta + step * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def _random_start(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        if self.cfg.norm == "linf":
            return self._project((torch.rand_like(x) * 2 - 1) * eps, x, eps)
        d = torch.randn_like(x)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return self._project(d * eps * torch.rand(len(x), 1, 1, 1, device=x.device), x, eps)

    def adversarial(self, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """The training attack's images for a batch (network in eval mode, no weight gradients)."""
        cfg = self.cfg
        if eps == 0:  # the ball is the point itself: a standard-trained twin (--eps 0) pays no attack
            return x
        with modes_kept(self.net):
            self.net.eval()
            if cfg.method == "trades":
                with torch.no_grad(), self.autocast():
                    p_clean = F.softmax(self.net(self._normalise(x)).float(), 1)
                delta = self._project(0.001 * torch.randn_like(x), x, eps)
            else:
                delta = self._random_start(x, eps)
            for _ in range(cfg.attack_steps):
                delta.requires_grad_(True)
                with self.autocast():
                    logits = self.net(self._normalise(x + delta)).float()
                if cfg.method == "trades":
                    loss = F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum")
                else:
                    loss = F.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
                delta = self._project(self._ascend(delta.detach(), grad, cfg.step_size), x, eps)
        return (x + delta).detach()

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x8, y = batch
        x = x8.float().div(255)
        if cfg.augment != "none":
            x = random_flip_shift(x, "flip" in cfg.augment, 4 if "flip" in cfg.augment else 2)
        eps = self.current_eps()
        x_adv = self.adversarial(x, y, eps)
        self.net.train()
        with self.autocast():
            if cfg.method == "trades":
                logits_both = self.net(self._normalise(torch.cat([x, x_adv]))).float()
                clean, adv = logits_both[: len(x)], logits_both[len(x) :]
                robust_term = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
                loss = F.cross_entropy(clean, y) + cfg.beta * robust_term
            else:
                adv = self.net(self._normalise(x_adv)).float()
                loss = F.cross_entropy(adv, y)
        opt_c = self.optimizers["classifier"]
        opt_c.zero_grad(set_to_none=True)
        loss.backward()
        opt_c.step()
        for s in self.schedulers.values():
            s.step()
        if self.ema is not None:
            update_ema(self.ema, self.net, cfg.ema)
        self.steps_done += 1
        return {
            "loss": loss.detach(),
            "acc_adversarial": (adv.argmax(1) == y).float().mean().detach(),
            "eps": torch.tensor(eps, device=self.device),
        }

    def extra_state(self) -> dict:
        return {"steps_done": torch.tensor(self.steps_done)}

    def load_extra_state(self, state: dict) -> None:
        self.steps_done = int(state["steps_done"])

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """The first validation (else training) images with the training attack's perturbation."""
        source = self.val_data.images if self.val_data is not None else self.batches.sources[0][0]
        x = source[:16].to(self.device).float().div(255)
        with torch.enable_grad(), modes_kept(self.modules.values()):
            y = self.inference_module()(self._normalise(x)).argmax(1)
            return self.adversarial(x, y, self.cfg.eps).clamp(0, 1)

    # -- selection -----------------------------------------------------------------------------
    def classifier(self):
        """The evaluated network as an attackable classifier ([0, 1] images in, logits out)."""
        from ..attacks import ImageClassifier

        spec = self.classifier_spec()
        return ImageClassifier(
            spec.module,
            spec.mean,
            spec.std,
            None,
            spec.channels,
            spec.class_names,
            "robust",
            channels_last=False,
            fold=False,
        )

    def validation_metrics(self) -> dict:
        """Clean accuracy on the validation split and PGD robust accuracy on its first --val-count
        images at the training epsilon (never the test set)."""
        if self._val_cache and self._val_cache[0] == self.steps_done:
            return self._val_cache[1]
        from ..attacks import PGD

        cfg = self.cfg
        with modes_kept(self.modules.values()):
            clf = self.classifier().eval()
            x_all = self.val_data.images.to(self.device)
            y_all = self.val_data.labels.to(self.device)
            accuracy = self._clean_val_accuracy(clf)
            x, y = x_all[: cfg.val_count].float().div(255), y_all[: cfg.val_count]
            atk = PGD(clf, cfg.eps, steps=cfg.val_steps, norm=cfg.norm, seed=cfg.seed)
            robust = torch.cat(
                [clf(atk(xb, yb)).argmax(1) == yb for xb, yb in zip(x.split(250), y.split(250))]
            )
        out = {"val_accuracy": accuracy, "val_robust_accuracy": robust.float().mean().item()}
        self._val_cache = (self.steps_done, out)
        return out

    @torch.no_grad()
    def _clean_val_accuracy(self, clf=None) -> float:
        with modes_kept(self.modules.values()):
            clf = clf or self.classifier().eval()
            x, y = self.val_data.images.to(self.device), self.val_data.labels.to(self.device)
            pred = torch.cat([clf(b.float().div(255)).argmax(1) for b in x.split(500)])
        return (pred == y).float().mean().item()

    def epoch_metrics(self) -> dict:
        if self.val_data is None:
            return {}
        if self.cfg.eval_every and self.cfg.eval_every != len(self.batches):
            # --eval-every N steps: the PGD check runs on that period; an epoch over 1,000 labels is a
            # few steps, too short to attack the validation slice after each one.
            return {"val_accuracy": self._clean_val_accuracy()}
        return self.validation_metrics()

    def monitor(self) -> tuple[str, float, bool]:
        """Validation robust accuracy (PGD at the training epsilon): the best checkpoint is kept by it."""
        return "val_robust_accuracy", self.validation_metrics()["val_robust_accuracy"], False

    # -- use -----------------------------------------------------------------------------------
    def inference_module(self) -> nn.Module:
        return (self.ema if self.ema is not None else self.net).eval()

    def classifier_spec(self) -> ClassifierSpec:
        c = self.cfg
        return ClassifierSpec(
            self.inference_module(),
            [0.5] * c.channels,
            [0.5] * c.channels,
            c.image_size,
            c.channels,
            c.class_names,
        )

    def evaluate(self, run_dir, data: str | None = None, **_) -> dict:
        return evaluate(self, run_dir, data)

    def classify(self, paths: list, skip_bad: bool = False) -> list[dict]:
        from ..data.images import decode_all

        cfg = self.cfg
        images, kept = decode_all(paths, cfg.channels, cfg.image_size, skip_bad)
        return prediction_rows(kept, _probabilities(self, images), cfg.class_names)


@torch.no_grad()
def _probabilities(recipe: Robust, images: torch.Tensor) -> torch.Tensor:
    net = recipe.inference_module()
    parts = [
        torch.softmax(net(Robust._normalise(b.to(recipe.device).float().div(255))).float(), 1).cpu()
        for b in images.split(500)
    ]
    return torch.cat(parts)


def evaluate(recipe: Robust, run_dir, data: str | None = None) -> dict:
    """Clean test accuracy, per class and the confusion matrix (evaluation/report.json and
    confusion.png); robust accuracy is `gankit evaluate --attack autoattack --model RUN`."""
    from pathlib import Path

    from .. import viz
    from ..io import write_json_atomic
    from ..metrics import classification_report

    cfg = recipe.cfg
    test = recipe.load_eval_data(cfg, data)
    if test is None:
        raise GankitError(
            f"{run_dir}: trained on a folder without a test split; pass --data with a labelled test folder"
        )
    if test.labels.max() >= cfg.num_classes:
        raise GankitError(
            f"--data {data}: has {int(test.labels.max()) + 1} classes, the run has {cfg.num_classes}"
        )
    pred = _probabilities(recipe, test.images).argmax(1)
    report = classification_report(pred, test.labels, cfg.class_names)
    report.update(
        run_dir=str(run_dir), data=data or f"{cfg.data}:test", weights="ema" if recipe.ema else "last"
    )
    out = Path(run_dir) / "evaluation"
    write_json_atomic(out / "report.json", report)
    viz.plot_confusion(
        report["confusion_matrix"],
        cfg.class_names,
        out / "confusion.png",
        title=f"{cfg.data}: clean accuracy {report['accuracy']:.2%} on {len(test)} images",
    )
    report["files"] = [str(out / "report.json"), str(out / "confusion.png")]
    eps = f"{cfg.eps:g}"
    report["lines"] = [
        f"clean accuracy {report['accuracy']:.2%} on {report['count']} images ({report['data']}, "
        f"{report['weights']} weights)",
        f"robust accuracy: gankit evaluate --attack autoattack --model {run_dir} "
        f"--data {data or cfg.data} --eps {eps}" + (" --norm l2" if cfg.norm == "l2" else ""),
        *(f"wrote {f}" for f in report["files"]),
    ]
    return report
