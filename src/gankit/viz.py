"""Image grids and loss plots, written atomically as PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .io import atomic_path


def make_grid(
    images: torch.Tensor,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> torch.Tensor:
    """Tile float images (N, C, H, W) in [0, 1] into one (C, H', W') image, `nrow` per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i, img in enumerate(images.detach().float().cpu()):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = img
    return grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) float in [0, 1] -> 8-bit Pillow image, rounded (never truncated)."""
    a = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    a = a.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, "L" if a.shape[2] == 1 else "RGB")


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Save a (C, H, W) [0, 1] tensor as PNG, atomically."""
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="PNG")
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save (N, C, H, W) [0, 1] images as one PNG grid."""
    return save_image(make_grid(images, nrow), path)


def save_gif(images: torch.Tensor, path: str | Path, ms_per_frame: int = 100, bounce: bool = True) -> Path:
    """Save (N, C, H, W) [0, 1] images as an animated GIF that loops forever, atomically; `bounce`
    plays the frames forward then back, so the loop has no jump."""
    frames = [to_pil(im) for im in images]
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    with atomic_path(path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0
        )
    return Path(path)


def plot_losses(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Plot every loss_* series of metrics.jsonl against the step into a PNG."""
    return plot_series(metrics_path, out, lambda k: k.startswith("loss"), "loss", title)


# Quality measured along training (--eval-every, SSGAN's per-epoch validation accuracy).
MONITORED = ("fid_train", "val_accuracy")


def plot_monitored(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Plot the monitored quality series of metrics.jsonl (FID on training images, validation
    accuracy) against the step into a PNG; None when the run logged none."""
    return plot_series(metrics_path, out, lambda k: k in MONITORED, None, title, marker="o")


def plot_series(
    metrics_path: Path, out: Path, keep, ylabel: str | None, title: str = "", marker: str | None = None
) -> Path | None:
    """Plot the series of metrics.jsonl whose names pass `keep` against the step; None if none. The
    y label defaults to the series' name(s)."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r if keep(k)})
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for k in keys:
        pts = np.array([(r["step"], r[k]) for r in records if k in r])
        ax.plot(pts[:, 0], pts[:, 1], label=k, marker=marker)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or ", ".join(keys))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def plot_confusion(matrix: list[list[int]], class_names: list[str], out: Path, title: str = "") -> Path:
    """A confusion-matrix heat map (rows: true class, columns: predicted) with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
