"""Offline quality check for pix2pix on real photos: grayscale -> colour.

Builds paired crops from the CC0 photos scikit-image ships (A = grayscale, B = colour, in the
two-folder layout), training crops from six photos and validation crops from a seventh one the model
never sees, trains a short CPU run, and evaluates validation L1 / PSNR / SSIM against the trivial
baselines (copying the grayscale input into each channel; the mean training image).

    python benchmarks/pix2pix_quality.py --out /tmp/p2p-quality --epochs 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import ResultLog  # noqa: E402  (this folder)
from PIL import Image

TRAIN = ["astronaut", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field"]
VAL = ["chelsea"]


def crops(photo: np.ndarray, n: int, size: int, rng) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        s = int(rng.integers(size, min(h, w, 2 * size) + 1))  # a little scale variety
        t, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        img = Image.fromarray(photo[t : t + s, left : left + s]).resize(
            (size, size), Image.Resampling.BICUBIC
        )
        out.append(np.asarray(img))
    return out


def build(root: Path, per_photo: int, val_crops: int, size: int, seed: int = 0) -> None:
    import skimage.data

    rng = np.random.default_rng(seed)
    for split, names, n in (("train", TRAIN, per_photo), ("val", VAL, val_crops)):
        for side in "AB":
            (root / split / side).mkdir(parents=True, exist_ok=True)
        k = 0
        for name in names:
            for c in crops(getattr(skimage.data, name)(), n, size, rng):
                Image.fromarray(c).convert("L").save(root / split / "A" / f"{name}-{k:04d}.png")
                Image.fromarray(c).save(root / split / "B" / f"{name}-{k:04d}.png")
                k += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/p2p-quality")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--per-photo", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    out = Path(args.out)
    data, run = out / "pairs", out / "run"
    if not data.exists():
        build(data, args.per_photo, 24, 160)
    gk = [sys.executable, "-m", "gankit"]
    subprocess.run(
        [
            *gk,
            "train",
            "pix2pix",
            "--data",
            str(data),
            "--image-size",
            "128",
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--out",
            str(run),
            "--log-every",
            "20",
        ],
        check=True,
    )
    r = subprocess.run([*gk, "evaluate", str(run), "--json"], check=True, capture_output=True, text=True)
    report = json.loads(r.stdout)
    print(json.dumps(report, indent=2))
    log = ResultLog("pix2pix-quality")
    log.add(report, echo=False)
    log.write()


if __name__ == "__main__":
    main()
