"""The seed's experiment for real files: attack images at several epsilons, save each adversarial image
as PNG (rounded, never JPEG) with the float tensor beside it, and report the label and confidence of the
*saved and re-decoded* image, plus a panel (original, perturbation, adversarial per eps)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from .. import viz
from ..data.images import BAD_IMAGE_ERRORS, decode, describe_bad_image
from ..errors import GankitError
from ..io import atomic_path, distinct_stems, write_json_atomic
from .autoattack import MEMBERS, AutoAttack, count_found
from .checks import model_checks, square_check
from .classifiers import ImageClassifier
from .registry import make_attack


def parse_eps(text: str, norm: str = "linf") -> list[float]:
    """'0,1/255,0.01' -> [0.0, 0.00392..., 0.01]; each in [0, 1] (Linf) or non-negative (L2)."""
    values = []
    for part in text.split(","):
        try:
            num, _, den = part.strip().partition("/")
            v = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            raise GankitError(f"--eps {text!r}: {part!r} is not a number or fraction like 4/255") from None
        if not math.isfinite(v) or v < 0 or (norm == "linf" and v > 1.0):
            where = "[0, 1] (Linf epsilon is in [0, 1] pixel scale)" if norm == "linf" else "[0, inf) (L2)"
            raise GankitError(f"--eps {text!r}: {part.strip()} is outside {where}")
        values.append(v)
    return values


def resolve_target(text: str | None, model: ImageClassifier):
    """--target: a class id, a class name, 'least-likely' or 'random'."""
    if text is None or text in ("least-likely", "random"):
        return text
    names = model.class_names or []
    if text.isdigit():
        k = len(names) if names else None
        if k is not None and int(text) >= k:
            raise GankitError(f"--target {text}: the model has classes 0..{k - 1}")
        return int(text)
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise GankitError(
        f"--target {text!r}: not a class of {model.name} (give a class id or an exact class name)"
    )


def load_image_tensor(path: Path, model: ImageClassifier) -> torch.Tensor:
    """Decode an image file to a [0, 1] float CHW tensor, centre-cropped and resized to the model's input."""
    size = model.input_size[0] if model.input_size else None
    return decode(path, model.channels, size).float().div(255)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


def read_png(path: Path) -> torch.Tensor:
    """An 8-bit PNG (L or RGB, as gankit writes them) as a [0, 1] float CHW tensor."""
    with Image.open(path, formats=["PNG"]) as img:
        a = np.asarray(img, dtype=np.float32) / 255
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)


def _save_png(image: torch.Tensor, path: Path) -> torch.Tensor:
    """Save as PNG (rounded to 8 bits) and return the re-decoded [0, 1] tensor."""
    viz.save_image(image, path)
    return read_png(path)


def amplified(delta: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """A perturbation made visible: 0.5 + delta scaled so its largest entry reaches 0 or 1, and the
    factor (None, and plain grey, for no perturbation)."""
    peak = float(delta.abs().max())
    if peak == 0:
        return torch.full_like(delta, 0.5), None
    return 0.5 + delta / (2 * peak), 0.5 / peak


def attack_files(
    model: ImageClassifier,
    paths: list[Path],
    attack: str,
    eps_list: list[float],
    out: Path,
    target=None,
    **options,
) -> dict:
    """Run `attack` at every eps on every image; write PNGs, tensors, panels and report.json into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    names = model.class_names or [str(i) for i in range(10_000)]
    device = next(model.parameters()).device
    report = {
        "attack": attack,
        "model": model.name,
        "eps": eps_list,
        "target": target,
        "options": options,
        "images": [],
    }
    found: dict[float, list] = {eps: [] for eps in eps_list}
    checked = False
    for path, name in zip(paths, distinct_stems(paths)):
        try:
            x = load_image_tensor(path, model).unsqueeze(0).to(device)
        except BAD_IMAGE_ERRORS as e:
            raise GankitError(f"{path}: {describe_bad_image(e)}") from None
        with torch.no_grad():
            p0 = torch.softmax(model.eval()(x).float(), 1)[0]
        entry = {
            "path": str(path),
            "clean": {
                "label": names[int(p0.argmax())],
                "class": int(p0.argmax()),
                "confidence": float(p0.max()),
            },
            "results": [],
        }
        if not checked:  # the masking checks on the first image: they need the model, not many images
            report["warnings"], checked = model_checks(model, x), True
        panel = []
        for eps in eps_list:
            atk = make_attack(attack, model, eps, **options)
            if isinstance(atk, AutoAttack):
                report["protocol"] = {k: v for k, v in atk.protocol.items() if k != "eps"}
            r = atk.run(x, None, target)
            found[eps] += r.found_by or []
            stem = f"{name}_eps{eps:.4f}"
            decoded = _save_png(r.adversarial[0].cpu(), out / f"{stem}.png").to(device)
            with torch.no_grad():
                p = torch.softmax(model(decoded.unsqueeze(0)).float(), 1)[0]
            label, conf = names[int(p.argmax())], float(p.max())
            final = out / f"{stem}_{_slug(label)}_{conf:.3f}.png"
            (out / f"{stem}.png").replace(final)
            with atomic_path(out / f"{stem}.safetensors") as tmp:
                save_file(
                    {"adversarial": r.adversarial[0].cpu().contiguous()},
                    str(tmp),
                    metadata={"eps": str(eps), "attack": attack, "source": str(path)},
                )
            target_id = int(r.targets[0]) if r.targets is not None else None
            success = (
                (int(p.argmax()) != int(r.labels[0])) if target_id is None else int(p.argmax()) == target_id
            )
            entry["results"].append(
                {
                    "eps": eps,
                    "png": str(final),
                    "tensor": str(out / f"{stem}.safetensors"),
                    "label": label,
                    "class": int(p.argmax()),
                    "confidence": conf,
                    "success": success,
                    "target": target_id,
                    "label_before_saving": names[int(r.adv_pred[0])],
                    "linf": float(r.linf[0]),
                    "l2": float(r.l2[0]),
                    "linf_saved": float((decoded - x[0]).abs().max()),
                }
                | ({"broken_by": r.found_by[0]} if r.found_by else {})
            )
            panel.append((eps, r.adversarial[0].cpu(), label, conf))
        entry["panel"] = str(_panel(x[0].cpu(), entry["clean"], panel, out / f"{name}_panel.png"))
        report["images"].append(entry)
    report["summary"] = _summary(report, found, options)
    for row in report["summary"]:
        report["warnings"] += [{**w, "eps": row["eps"]} for w in square_check(row.get("breakdown") or {})]
    write_json_atomic(out / "report.json", report)
    return report


def _summary(report: dict, found: dict, options: dict) -> list[dict]:
    """Per eps: how many of the images the saved adversarial fooled, and for AutoAttack which of its
    attacks did (before saving)."""
    rows = []
    for eps in report["eps"]:
        hits = [r["success"] for img in report["images"] for r in img["results"] if r["eps"] == eps]
        row = {
            "eps": eps,
            "images": len(hits),
            "fooled": sum(hits),
            "unfooled_share": 1 - sum(hits) / max(len(hits), 1),
        }
        if found[eps] and eps > 0:
            row["breakdown"] = count_found(found[eps], MEMBERS[options.get("version", "standard")])
        rows.append(row)
    return rows


def _panel(x: torch.Tensor, clean: dict, results: list, path: Path) -> Path:
    """Row 1: the original and the adversarial image per eps; row 2: the perturbation, amplified."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), dpi=80, squeeze=False)
    show = lambda ax, t: ax.imshow(t.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray")  # noqa: E731
    show(axes[0, 0], x)
    axes[0, 0].set_title(f"original\n{clean['label'][:18]} {clean['confidence']:.2f}", fontsize=8)
    axes[1, 0].axis("off")
    for i, (eps, adv, label, conf) in enumerate(results, start=1):
        show(axes[0, i], adv)
        axes[0, i].set_title(f"eps {eps:.4f}\n{label[:18]} {conf:.2f}", fontsize=8)
        image, factor = amplified(adv - x)
        show(axes[1, i], image)
        axes[1, i].set_title(f"perturbation x{factor:.0f}" if factor else "no perturbation", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
