"""Semi-supervised GAN: a classifier trained from a few labels plus unlabelled images.

Salimans et al. 2016 ("Improved Techniques for Training GANs"), as the seed builds it: the
classifier's trunk is the discriminator's; its K class logits give the class (softmax) and the
real/fake logit (logsumexp). Each step updates the classifier/discriminator on a labelled
half-batch (cross-entropy), an unlabelled half-batch (real) and generated images (fake), then the
generator. Fixes of the seed: D = sigmoid(logsumexp) instead of the overflowing Z/(Z+1); the
labelled subset is balanced and drawn without replacement from --seed (the seed's `randint` draws
duplicates); one optimiser for the shared weights with the summed loss, as in the paper (Keras gave
the seed two Adam states for the same weights).
Options: feature-matching generator loss (the paper's choice for semi-supervised learning), an EMA
of the classifier for evaluation, and `--baseline supervised`: the same classifier on the same
labelled subset alone, for the same number of steps.
Defaults differ from the seed's schedule (30 epochs at Adam 2e-4, constant): 8 epochs at 6e-4 with
+-2 px shifts of the real images and a linear decay over the second half reach a higher test
accuracy in about a quarter of the steps (measured on Fashion-MNIST, see docs/guides/performance.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TrainConfig, opt
from ..cpu import place, prepare
from ..data import ImageSet, is_known_dataset, load_dataset
from ..data.batches import SemiSupervisedBatches
from ..data.images import load_labelled_folder
from ..data.subsets import balanced_subset, holdout, nonempty_classes, read_indices
from ..data.transforms import from_tanh_range, random_flip_shift, to_tanh_range
from ..engine.optim import adam
from ..engine.schedules import constant_then_linear
from ..errors import GankitError
from ..nn.modes import modes_kept
from ..nn.sngan import SIZES as RESNET_SIZES
from ..nn.ssgan import ResNetSharedDiscriminator, SharedDiscriminator, SSGANGenerator, real_fake_logit
from . import register
from .base import ClassifierSpec, Recipe
from .common import prediction_rows, split_record, update_ema
from .dcgan import sample as sample_generator

AUGMENTS = ("translate", "flip+translate", "none")


@dataclass
class SSGANConfig(TrainConfig):
    recipe: str = "ssgan"
    data: str = "fashion-mnist"
    labels: int | None = opt(
        None,
        "labelled images, balanced over classes (default: 1000 for named datasets, "
        "every labelled image of a folder)",
    )
    labels_file: str | None = opt(
        None,
        "JSON list of training-image indices to use as the labelled subset "
        "(e.g. a run's labelled_indices.json)",
    )
    epochs: int = opt(
        8,
        "passes over the training data (4,800 steps at the default batch; the seed's schedule is 30 "
        "epochs at --lr 2e-4 --augment none --no-lr-decay)",
    )
    batch_size: int = opt(
        100, "GAN batch: half real unlabelled, half generated; the labelled batch is half of it"
    )
    lr: float = opt(6e-4, "Adam learning rate of both networks (the seed's: 2e-4)")
    beta1: float = opt(0.5, "Adam beta1")
    gen_loss: str = opt(
        "feature-matching",
        "generator loss: feature-matching (Salimans) or bce (the seed)",
        choices=("feature-matching", "bce"),
    )
    ema: float = opt(0.999, "decay of the classifier's weight average used for evaluation (0 = off)")
    augment: str = opt(
        "translate",
        "random augmentation of real images: translate (+-2 px), flip+translate "
        "(horizontal flips too: not for digits or text) or none",
        choices=AUGMENTS,
    )
    input_noise: float = opt(
        0.0, "standard deviation of Gaussian noise added to the classifier's inputs in training (0 = off)"
    )
    hidden_noise: float = opt(
        0.0, "standard deviation of Gaussian noise added to each hidden layer of the classifier in training"
    )
    weight_norm: bool = opt(
        False,
        "weight-normalise the classifier's layers (with --input-noise 0.3 --hidden-noise 0.5: Salimans "
        "et al.'s MNIST discriminator)",
        model=True,
    )
    network: str = opt(
        "seed",
        "the shared classifier/discriminator: seed (three strided convolutions, the seed's) or resnet "
        "(the SNGAN family's ResNet discriminator with a K-logit head; 28, 32 or 64 px)",
        choices=("seed", "resnet"),
        model=True,
    )
    width: int = opt(128, "channels of the resnet classifier's residual blocks", model=True)
    spectral_norm: bool = opt(
        False,
        "spectral-normalise every layer of the resnet classifier (as SNGAN's discriminator)",
        model=True,
    )
    validation: int | None = opt(
        None,
        "training images held out for selection (never labelled, never trained on; their accuracy is "
        "logged each epoch and is what --eval-every selects on); default 5000 for named datasets "
        "(1/12 of smaller ones), 0 for folders (there they are drawn from the labelled images)",
    )
    entropy_weight: float = opt(
        0.0,
        "weight of the class entropy on unlabelled images, minimised by the classifier (Dai et al. "
        "2017, 'Bad GAN'); 0 = off",
    )
    lr_decay: bool = opt(
        True, "keep the learning rate for the first half of training, then decay it linearly to zero"
    )
    baseline: str = opt(
        "none",
        "'supervised': train the classifier on the labelled subset alone",
        choices=("none", "supervised"),
    )
    latent_dim: int = opt(100, "length of the generator's noise vector", model=True)
    image_size: int | None = opt(None, "image size (default 28 for MNIST-family data, else 32)", model=True)
    channels: int | None = opt(None, "1 or 3 (default: from the data)", model=True)
    num_classes: int | None = opt(None, "number of classes (from the data)", model=True)
    class_names: list | None = opt(None, "class names (from the data)", cli=False)
    preview_every: int = 1
    checkpoint_every: int = 1000
    # Runs stored before the validation split had none.
    BEFORE: ClassVar[dict] = {**TrainConfig.BEFORE, "validation": 0}

    def validate(self) -> None:
        super().validate()
        if self.labels is not None and self.labels <= 0:
            raise GankitError(f"--labels {self.labels}: expected a positive number of labelled images")
        if self.batch_size % 2:
            raise GankitError(f"--batch-size {self.batch_size}: must be even (half real, half generated)")
        if self.entropy_weight < 0:
            raise GankitError(f"--entropy-weight {self.entropy_weight}: expected a weight >= 0")
        for name in ("input_noise", "hidden_noise"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise GankitError(f"{flag} {getattr(self, name)}: expected a standard deviation >= 0")
        if self.validation is not None and self.validation < 0:
            raise GankitError(f"--validation {self.validation}: expected a number of images >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise GankitError(f"--ema {self.ema}: expected a decay in [0, 1)")
        if self.network == "resnet":
            for name in ("input_noise", "hidden_noise", "weight_norm"):
                if getattr(self, name):
                    flag = "--" + name.replace("_", "-")
                    raise GankitError(f"{flag}: applies to --network seed, not resnet")
            if self.image_size is not None and self.image_size not in RESNET_SIZES:
                raise GankitError(
                    f"--image-size {self.image_size}: --network resnet expects one of {RESNET_SIZES}"
                )
            if self.width < 8:
                raise GankitError(f"--width {self.width}: expected at least 8 channels")
        elif self.spectral_norm:
            raise GankitError("--spectral-norm: applies to --network resnet")
        if self.image_size is not None and (self.image_size % 4 or not 8 <= self.image_size <= 64):
            raise GankitError(f"--image-size {self.image_size}: expected a multiple of 4 between 8 and 64")


@register
class SSGAN(Recipe):
    """A classifier from a few labels plus unlabelled images (Salimans et al. 2016's semi-supervised GAN)."""

    name = "ssgan"
    Config = SSGANConfig
    data_format = "labelled"
    capabilities = frozenset({"classify", "evaluate", "sample", "monitor"})
    smoke_options = dict(labels=40, epochs=2, batch_size=32, checkpoint_every=3)
    demo_options = dict(
        data="fashion-mnist-small",
        labels=100,
        epochs=20,
        preview_every=5,
        log_every=20,
        checkpoint_every=1000,
    )

    def __init__(self, cfg: SSGANConfig, device: torch.device):
        super().__init__(cfg, device)
        if cfg.network == "resnet":
            cfg.validate()  # the image size is known now (from the data)
            net = ResNetSharedDiscriminator(
                cfg.num_classes, cfg.channels, cfg.image_size, cfg.width, cfg.spectral_norm
            )
        else:
            net = SharedDiscriminator(
                cfg.num_classes,
                cfg.channels,
                cfg.image_size,
                input_noise=cfg.input_noise,
                hidden_noise=cfg.hidden_noise,
                weight_norm=cfg.weight_norm,
            )
        self.classifier = prepare(net, device)
        self.modules = {"classifier": self.classifier}
        betas = (cfg.beta1, 0.999)
        self.optimizers = {"classifier": adam(self.classifier.parameters(), cfg.lr, betas)}
        self.supervised_only = cfg.baseline == "supervised"
        if not self.supervised_only:
            self.generator = prepare(SSGANGenerator(cfg.latent_dim, cfg.channels, cfg.image_size), device)
            self.modules["generator"] = self.generator
            self.optimizers["generator"] = adam(self.generator.parameters(), cfg.lr, betas)
            self._g_params = list(self.generator.parameters())
            g_rng = torch.Generator().manual_seed(cfg.seed)
            self.fixed_latent = torch.randn(16, cfg.latent_dim, generator=g_rng).to(device)
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.classifier).requires_grad_(False).eval()
            self.modules["ema_classifier"] = self.ema
        self.labelled_indices: torch.Tensor | None = None
        self.val_data: ImageSet | None = None

    # -- data ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, cfg: SSGANConfig) -> ImageSet:
        if cfg.image_size is None:
            cfg.image_size = 28 if is_known_dataset(cfg.data) else 32
        if is_known_dataset(cfg.data):
            data = load_dataset(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels)
        else:
            labelled, extra = load_labelled_folder(
                cfg.data, cfg.image_size, cfg.channels, cfg.skip_bad_images
            )
            data = labelled
            if extra is not None:  # images without a label: label -1
                data = ImageSet(
                    torch.cat([labelled.images, extra.images]),
                    torch.cat([labelled.labels, torch.full((len(extra),), -1)]),
                    labelled.classes,
                    labelled.source,
                )
        cfg.channels = data.channels
        names = list(data.classes) if data.classes else []
        n_cls = int(data.labels.max()) + 1
        cfg.num_classes = cfg.num_classes or (len(names) if names and len(names) >= n_cls else n_cls)
        cfg.class_names = names[: cfg.num_classes] if names else [str(i) for i in range(cfg.num_classes)]
        return data

    @classmethod
    def load_eval_data(cls, cfg: SSGANConfig, data: str | None = None) -> ImageSet | None:
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
            cfg.validation = min(5000, len(data) // 12) if is_known_dataset(cfg.data) else 0
        val = holdout(data.labels, cfg.validation)
        labels = data.labels.clone()
        labels[val] = -1  # held out: never drawn as a labelled image
        if cfg.labels_file:
            idx = read_indices(cfg.labels_file, len(data), data.labels)
            clash = torch.isin(idx, val).sum().item()
            if clash:
                raise GankitError(
                    f"--labels-file {cfg.labels_file}: {clash} of its images are in this run's validation "
                    f"split of {len(val)}; pass --validation {len(val)} only with indices drawn beside it "
                    "(a run's labelled_indices.json at the same --validation), or --validation 0"
                )
        elif cfg.labels is None and not is_known_dataset(cfg.data):  # a user's folder: every labelled image
            idx = torch.nonzero(labels >= 0).flatten()
        else:
            classes = nonempty_classes(labels, cfg.num_classes, cfg.class_names)
            n = cfg.labels or 1000 // len(classes) * len(classes)  # default: about 1000, balanced
            idx = balanced_subset(labels, n, cfg.num_classes, cfg.seed, classes)
        if len(idx) == 0:
            raise GankitError(f"{cfg.data}: no labelled training images are left beside the validation split")
        if cfg.eval_every and not len(val):
            raise GankitError(
                f"--eval-every {cfg.eval_every}: selects on a validation split; --validation is 0"
            )
        self.labelled_indices, self.validation_indices = idx, val
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[val] = False
        self.batches = SemiSupervisedBatches(
            data.images[idx], data.labels[idx], data.images[keep], cfg.batch_size // 2, cfg.seed, self.device
        )
        if cfg.lr_decay:
            total = cfg.total_steps(len(self.batches))
            self.schedulers = {k: constant_then_linear(o, total) for k, o in self.optimizers.items()}
        self.val_data = (
            ImageSet(data.images[val], data.labels[val], data.classes, data.source) if len(val) else None
        )

    def run_files(self) -> dict:
        files = {
            "labelled_indices.json": split_record(self.cfg, self.labelled_indices, "labelled training images")
        }
        if len(self.validation_indices):
            files["validation_indices.json"] = split_record(
                self.cfg,
                self.validation_indices,
                "held out: never labelled, never trained on; selection only",
            )
        return files

    # -- training ------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        x_lab, y_lab, x_unl = batch
        if self.cfg.augment != "none":
            flip, shift = "flip" in self.cfg.augment, 2
            x_lab, x_unl = random_flip_shift(x_lab, flip, shift), random_flip_shift(x_unl, flip, shift)
        x_lab, x_unl = to_tanh_range(x_lab), to_tanh_range(x_unl)
        half = len(x_unl)
        opt_c = self.optimizers["classifier"]
        if self.supervised_only:
            with self.autocast():
                logits, _ = self.classifier(place(x_lab))
            loss_sup = F.cross_entropy(logits.float(), y_lab)
            opt_c.zero_grad(set_to_none=True)
            loss_sup.backward()
            opt_c.step()
            self._after_step()
            return {"loss_sup": loss_sup.detach(), "acc_labelled": (logits.argmax(1) == y_lab).float().mean()}

        z = torch.randn(2 * half, self.cfg.latent_dim, device=self.device)
        with self.autocast():
            fake = self.generator(z)
            x = place(torch.cat([x_lab, x_unl, fake[:half].detach()]))
            logits, feats = self.classifier(self.augment(x))
        logits = logits.float()
        n_lab = len(x_lab)
        loss_sup = F.cross_entropy(logits[:n_lab], y_lab)
        d_real = real_fake_logit(logits[n_lab : n_lab + half])
        d_fake = real_fake_logit(logits[n_lab + half :])
        # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))): the seed's binary cross-entropy, stably.
        loss_unsup = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        logp_unl = F.log_softmax(logits[n_lab : n_lab + half], 1)
        entropy = -(logp_unl.exp() * logp_unl).sum(1).mean()  # of the class prediction, unlabelled
        if self.cfg.entropy_weight > 0:
            loss_unsup = loss_unsup + self.cfg.entropy_weight * entropy
        opt_c.zero_grad(set_to_none=True)
        (loss_sup + loss_unsup).backward()
        opt_c.step()

        with self.autocast():
            g_logits, g_feats = self.classifier(self.augment(fake))
        if self.cfg.gen_loss == "feature-matching":
            real_mean = feats[n_lab : n_lab + half].detach().float().mean(0)
            loss_g = F.mse_loss(g_feats.float().mean(0), real_mean)
        else:
            loss_g = F.softplus(-real_fake_logit(g_logits)).mean()
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward(inputs=self._g_params)
        self.optimizers["generator"].step()
        self._after_step()
        return {
            "loss_sup": loss_sup.detach(),
            "loss_unsup": loss_unsup.detach(),
            "loss_g": loss_g.detach(),
            "entropy_unl": entropy.detach(),
            "acc_labelled": (logits[:n_lab].argmax(1) == y_lab).float().mean().detach(),
        }

    def _after_step(self) -> None:
        for sched in self.schedulers.values():
            sched.step()
        if self.ema is not None:
            update_ema(self.ema, self.classifier, self.cfg.ema)

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        if self.supervised_only:
            return self.batches.labelled[:16].float().div(255)
        with modes_kept(self.generator):
            return from_tanh_range(self.generator.eval()(self.fixed_latent))

    def validation_accuracy(self) -> float:
        """Accuracy of the evaluated classifier on the held-out validation split (never the test set)."""
        with modes_kept(self.modules.values()):
            pred, _ = predict(self.inference_module(), self.val_data.images, self.device)
        return (pred == self.val_data.labels.to(pred.device)).float().mean().item()

    def epoch_metrics(self) -> dict:
        """Validation accuracy after each preview epoch (the test split is read by `evaluate` alone)."""
        return {} if self.val_data is None else {"val_accuracy": self.validation_accuracy()}

    def monitor(self) -> tuple[str, float, bool]:
        """Validation accuracy, what --eval-every logs and keeps the best checkpoint by (attach_data
        refuses --eval-every without a validation split)."""
        return "val_accuracy", self.validation_accuracy(), False

    def inference_module(self) -> nn.Module:
        return (self.ema if self.ema is not None else self.classifier).eval()

    def generator_module(self) -> nn.Module:
        """The run's generator (the classifier's adversary) in eval mode: z -> images in [-1, 1]."""
        if self.supervised_only:
            raise GankitError("a --baseline supervised ssgan run has no generator")
        return self.generator.eval()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """`n` images in [0, 1] from the run's generator (the classifier's adversary)."""
        return sample_generator(self.generator_module(), n, seed)

    def classifier_spec(self) -> ClassifierSpec:
        """The classifier (its EMA when kept) returning logits; it trains on images scaled to [-1, 1]."""
        c = self.cfg
        return ClassifierSpec(
            _LogitsOnly(self.inference_module()),
            [0.5] * c.channels,
            [0.5] * c.channels,
            c.image_size,
            c.channels,
            c.class_names,
        )

    def evaluate(self, run_dir, data: str | None = None, **_) -> dict:
        return evaluate(self, run_dir, data)

    def classify(self, paths: list, skip_bad: bool = False) -> list[dict]:
        return classify_files(self, paths, skip_bad)


class _LogitsOnly(nn.Module):
    """The shared classifier returns (logits, features); attacks want the logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


@torch.no_grad()
def predict(
    classifier: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class predictions and softmax probabilities (on CPU) for uint8 NCHW `images`."""
    classifier.eval()
    probs = []
    for part in images.split(batch_size):
        x = place(to_tanh_range(part.to(device)))
        logits, _ = classifier(x)
        probs.append(torch.softmax(logits.float(), 1).cpu())
    p = torch.cat(probs)
    return p.argmax(1), p


def evaluate(recipe: SSGAN, run_dir, data: str | None = None) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of a run's classifier on test data; writes
    evaluation/report.json and evaluation/confusion.png into the run directory."""
    from pathlib import Path

    from .. import viz
    from ..io import write_json_atomic
    from ..metrics import classification_report

    cfg = recipe.cfg
    test = recipe.load_eval_data(cfg, data)
    if test is None:
        raise GankitError(
            f"{run_dir}: trained on a folder without a test split; pass --data with a labelled "
            "test folder (one sub-folder per class)"
        )
    if test.labels.max() >= cfg.num_classes:
        raise GankitError(
            f"--data {data}: has {int(test.labels.max()) + 1} classes, the run has {cfg.num_classes}"
        )
    pred, _ = predict(recipe.inference_module(), test.images, recipe.device)
    report = classification_report(pred, test.labels, cfg.class_names)
    report.update(
        run_dir=str(run_dir), data=data or f"{cfg.data}:test", weights="ema" if recipe.ema else "last"
    )
    val_file = Path(run_dir) / "validation_indices.json"
    if val_file.is_file() and data is None:  # the held-out split, for the record beside the test number
        train = recipe.load_data(copy.copy(cfg))
        val = read_indices(val_file, len(train), train.labels)
        vpred, _ = predict(recipe.inference_module(), train.images[val], recipe.device)
        report["validation_accuracy"] = (vpred == train.labels[val]).float().mean().item()
        report["validation_count"] = len(val)
    out = Path(run_dir) / "evaluation"
    write_json_atomic(out / "report.json", report)
    viz.plot_confusion(
        report["confusion_matrix"],
        cfg.class_names,
        out / "confusion.png",
        title=f"{cfg.data}: accuracy {report['accuracy']:.2%} on {len(test)} images",
    )
    report["files"] = [str(out / "report.json"), str(out / "confusion.png")]
    worst = sorted(report["per_class_accuracy"].items(), key=lambda kv: kv[1])[:3]
    report["lines"] = [
        f"accuracy {report['accuracy']:.2%} on {report['count']} images ({report['data']}, "
        f"{report['weights']} weights)",
        "weakest classes: " + ", ".join(f"{k} {v:.1%}" for k, v in worst),
        *(
            [
                f"validation accuracy {report['validation_accuracy']:.2%} on the "
                f"{report['validation_count']} held-out training images"
            ]
            if "validation_accuracy" in report
            else []
        ),
        *(f"wrote {f}" for f in report["files"]),
    ]
    return report


def classify_files(recipe: SSGAN, paths: list, skip_bad: bool = False) -> list[dict]:
    """Predict each image file: [{path, label, confidence, top}] (top = 3 best (label, probability))."""
    from ..data.images import decode_all

    cfg = recipe.cfg
    images, kept = decode_all(paths, cfg.channels, cfg.image_size, skip_bad)
    _, probs = predict(recipe.inference_module(), images, recipe.device)
    return prediction_rows(kept, probs, cfg.class_names)
