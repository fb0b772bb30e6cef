"""`gankit export`: a run's network as a TorchScript or ONNX file, with a JSON side file that says how
to feed it and read it, so it can ship without gankit.

What is exported follows the run's capabilities: a classifier (`classify`, e.g. SSGAN), a translator
(`translate`: pix2pix, CycleGAN in either direction) or a generator (`sample`: DCGAN, cDCGAN, SSGAN's
adversary); `network=` picks another one the run offers. The file holds the bare network in eval mode
(batch size free, weights in fp32); the side file (FILE + '.json') records its inputs and outputs
(names, shapes, dtypes, value ranges), the pre- and post-processing, the class names, the source run
and checkpoint, the file's SHA-256, and the largest difference between the exported file's outputs
and gankit's on fixed inputs, measured right after writing it (onnxruntime for ONNX when installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .errors import GankitError
from .io import atomic_path, write_json_atomic

FORMATS = ("torchscript", "onnx")
NETWORKS = {"classifier": "classify", "translator": "translate", "generator": "sample"}
TOLERANCE = 1e-5
# What `pip install` brings each format's missing packages (module name -> package name).
FORMAT_PACKAGES = {"onnx": {"onnx": "onnx", "onnxscript": "onnxscript"}}

TANH_TO_PIXELS = "pixels = (y + 1) * 127.5, clipped to 0..255"
PIXELS_TO_TANH = "x = pixels / 127.5 - 1 (pixels 0..255)"


@dataclass
class Exportable:
    """A network with example inputs and the description its side file carries."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_specs: list[dict]
    output_specs: list[dict]
    info: dict = field(default_factory=dict)


class _Logits(nn.Module):
    """A classifier returning (logits, features) -> logits only (an exported graph has one output)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out[0] if isinstance(out, tuple) else out


def default_network(recipe) -> str:
    """What a run exports by default: its classifier, else its translator, else its generator."""
    for name, capability in NETWORKS.items():
        if recipe.offers(capability):
            return name
    raise GankitError(f"gankit export: a {recipe.name} run has no network to export")


def exportable(recipe, network: str | None = None, to: str | None = None, batch: int = 2) -> Exportable:
    """The network `network` (default: default_network) of a loaded recipe, on fixed example inputs."""
    network = network or default_network(recipe)
    if network not in NETWORKS:
        raise GankitError(f"--network {network!r}: expected one of {', '.join(NETWORKS)}")
    if not recipe.offers(NETWORKS[network]):
        able = [n for n, c in NETWORKS.items() if recipe.offers(c)]
        raise GankitError(f"--network {network}: a {recipe.name} run has none (it has: {', '.join(able)})")
    g = torch.Generator().manual_seed(0)
    cfg = recipe.cfg
    if network == "generator":
        module = recipe.generator_module().float().cpu()
        z = torch.randn(batch, module.latent_dim, generator=g)
        inputs = (z,)
        specs = [
            {"name": "z", "shape": ["batch", module.latent_dim], "dtype": "float32", "values": "N(0, 1)"}
        ]
        info = {}
        if recipe.offers("conditional"):
            inputs += (torch.arange(batch) % cfg.num_classes,)
            specs.append(
                {
                    "name": "labels",
                    "shape": ["batch"],
                    "dtype": "int64",
                    "values": f"0..{cfg.num_classes - 1}",
                }
            )
            info["classes"] = list(cfg.class_names)
        c, s = cfg.channels, cfg.image_size
        out = [
            {"name": "images", "shape": ["batch", c, s, s], "range": [-1, 1], "postprocess": TANH_TO_PIXELS}
        ]
        return Exportable(module, inputs, specs, out, info)
    if network == "translator":
        module = recipe.translator_module(to).float().cpu()
        _, (size, cin, cout) = recipe.translator(to)
        x = torch.rand(batch, cin, size, size, generator=g) * 2 - 1
        specs = [
            {
                "name": "images",
                "shape": ["batch", cin, size, size],
                "dtype": "float32",
                "range": [-1, 1],
                "preprocess": f"resize to {size}x{size} (larger images: tile), then {PIXELS_TO_TANH}",
            }
        ]
        out = [
            {
                "name": "translated",
                "shape": ["batch", cout, size, size],
                "range": [-1, 1],
                "postprocess": TANH_TO_PIXELS,
            }
        ]
        return Exportable(module, (x,), specs, out, {"direction": to or getattr(recipe, "direction", "AtoB")})
    spec = recipe.classifier_spec()
    module = _Logits(spec.module).float().cpu().eval()
    x = torch.randn(batch, spec.channels, spec.input_size, spec.input_size, generator=g)
    specs = [
        {
            "name": "images",
            "shape": ["batch", spec.channels, spec.input_size, spec.input_size],
            "dtype": "float32",
            "preprocess": f"x = (pixels / 255 - mean) / std per channel, mean {spec.mean}, std {spec.std}",
        }
    ]
    out = [
        {
            "name": "logits",
            "shape": ["batch", len(spec.class_names)],
            "postprocess": "softmax for probabilities",
        }
    ]
    return Exportable(
        module, (x,), specs, out, {"classes": list(spec.class_names), "mean": spec.mean, "std": spec.std}
    )


def _require_packages(fmt: str) -> None:
    missing = [
        pkg for mod, pkg in FORMAT_PACKAGES.get(fmt, {}).items() if importlib.util.find_spec(mod) is None
    ]
    if missing:
        raise GankitError(
            f"--format {fmt}: needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''} "
            "(pip install 'gankit[export]')"
        )


def _write(ex: Exportable, fmt: str, path: Path) -> None:
    names = [s["name"] for s in ex.input_specs]
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice; the shape checks it traces
            traced = torch.jit.trace(ex.module, ex.inputs, check_trace=False)
        traced.save(str(path))
        return

    # The exporter logs a warning per optional operator library it lacks (torchvision): not ours to fix.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ex.module,
            ex.inputs,
            str(path),
            input_names=names,
            output_names=[s["name"] for s in ex.output_specs],
            dynamic_shapes=tuple({0: batch} for _ in ex.inputs),
            dynamo=True,
            verbose=False,
            external_data=False,
        )


def run_exported(path: str | Path, fmt: str, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """Outputs of an exported file on `inputs` (None for ONNX when onnxruntime is not installed)."""
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")(*inputs)
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feeds)[0])


def export(
    recipe, out: str | Path, fmt: str, network: str | None = None, to: str | None = None, run_dir: str = ""
) -> dict:
    """Write the network to `out` (atomically) and its side file to `out`.json; return the side file's
    content. Raises GankitError if the exported outputs differ from gankit's by more than TOLERANCE."""
    if fmt not in FORMATS:
        raise GankitError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _require_packages(fmt)
    ex = exportable(recipe, network, to)
    out = Path(out)
    if out.is_dir():
        raise GankitError(f"-o {out}: is a folder; expected a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    check = tuple(t[:1] if t.ndim else t for t in ex.inputs)  # batch 1 as well: the batch size is free
    with torch.no_grad():
        expected = [ex.module(*ex.inputs), ex.module(*check)]
    with atomic_path(out) as tmp:
        try:
            _write(ex, fmt, tmp)
        except GankitError:
            raise
        except Exception as e:  # noqa: BLE001 - an exporter failure is reported in one line
            raise GankitError(
                f"gankit export: the {fmt} exporter failed ({type(e).__name__}: {str(e)[:200]})"
            ) from None
        diffs = []
        for inputs, want in zip((ex.inputs, check), expected):
            got = run_exported(tmp, fmt, inputs)
            if got is not None:
                diffs.append(float((got.float() - want.float()).abs().max()))
        worst = max(diffs) if diffs else None
        if worst is not None and worst > TOLERANCE:
            raise GankitError(f"gankit export: the {fmt} file's outputs differ from gankit's by {worst:.2e}")
        side = {
            "format": fmt,
            "file": out.name,
            "sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
            "network": network or default_network(recipe),
            "recipe": recipe.name,
            "run": str(run_dir),
            "checkpoint": getattr(recipe, "loaded_from", None),
            "inputs": ex.input_specs,
            "outputs": ex.output_specs,
            **ex.info,
            "verified": {
                "max_abs_difference": worst,
                "tolerance": TOLERANCE,
                "against": "gankit's network in fp32 on CPU, batches of 2 and 1",
                "runtime": "torch.jit"
                if fmt == "torchscript"
                else ("onnxruntime" if worst is not None else None),
            },
            "torch": torch.__version__,
        }
        # The side file first, naming the new file's digest: a crash before the rename below leaves the
        # old model beside a side file that no longer matches it, which loading refuses.
        write_json_atomic(Path(f"{out}.json"), side)
    return side
