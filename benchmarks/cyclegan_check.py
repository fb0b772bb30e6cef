"""Honest offline check for CycleGAN: two unpaired domains built from real photos with a known
mapping that the model never sees as pairs.

Domain A: crops from the left halves of six scikit-image photos. Domain B: crops from their right
halves (disjoint image regions) passed through a fixed "cold" colour transform T (desaturate, blue
cast). Test: crops of a seventh photo, testA = the crops, testB = T(crops). After a short CPU run,
the translated test images must be closer to their true counterparts than the untranslated inputs
are: G(testA) vs T(testA), F(testB) vs testA.

    python benchmarks/cyclegan_check.py --out /tmp/cg-check --steps 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from common import ResultLog  # noqa: E402  (this folder)
from PIL import Image

PHOTOS = ["astronaut", "rocket", "hubble_deep_field", "coffee", "retina", "chelsea"]
TEST_PHOTO = "immunohistochemistry"
MIX = np.array([[0.55, 0.25, 0.10], [0.20, 0.55, 0.15], [0.15, 0.25, 0.70]])
OFFSET = np.array([0.02, 0.06, 0.16])


def cold(img: np.ndarray) -> np.ndarray:
    """The fixed colour transform T of domain B (uint8 HxWx3 -> uint8 HxWx3)."""
    x = img.astype(np.float64) / 255
    return (np.clip(x @ MIX.T + OFFSET, 0, 1) * 255).round().astype(np.uint8)


def crops(photo: np.ndarray, n: int, size: int, rng) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        s = int(rng.integers(size, min(h, w, 3 * size) + 1))
        t, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        out.append(np.asarray(Image.fromarray(photo[t : t + s, left : left + s]).resize((size, size))))
    return out


def build(root: Path, per_photo: int, size: int, seed: int = 0) -> None:
    import skimage.data

    rng = np.random.default_rng(seed)
    for d in ("trainA", "trainB", "testA", "testB"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        half = photo.shape[1] // 2
        for k, c in enumerate(crops(photo[:, :half], per_photo, size, rng)):
            Image.fromarray(c).save(root / "trainA" / f"{name}-{k:04d}.png")
        for k, c in enumerate(crops(photo[:, half:], per_photo, size, rng)):
            Image.fromarray(cold(c)).save(root / "trainB" / f"{name}-{k:04d}.png")
    for i, c in enumerate(crops(getattr(skimage.data, TEST_PHOTO)(), 24, size, rng)):
        Image.fromarray(c).save(root / "testA" / f"{i:04d}.png")
        Image.fromarray(cold(c)).save(root / "testB" / f"{i:04d}.png")


def scores(pred: torch.Tensor, true: torch.Tensor) -> dict:
    from gankit.metrics.image import l1, psnr

    return {"l1": round(l1(pred, true).mean().item(), 4), "psnr": round(psnr(pred, true).mean().item(), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/cg-check")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--generator", default="unet")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    out = Path(args.out)
    data, run = out / "domains", out / "run"
    if not data.exists():
        build(data, 24, args.size + 8)
    if not run.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gankit",
                "train",
                "cyclegan",
                "--data",
                str(data),
                "--image-size",
                str(args.size),
                "--generator",
                args.generator,
                "--resnet-blocks",
                "6",
                "--batch-size",
                "4",
                "--max-steps",
                str(args.steps),
                "--out",
                str(run),
                "--log-every",
                "50",
                "--preview-every",
                "5",
            ],
            check=True,
        )
    from gankit.api import load_recipe
    from gankit.data.unpaired import load_domains

    r = load_recipe(run)
    a, b = load_domains(data, "test", args.size)  # testB[i] = T(testA[i])
    fa, fb = a.float() / 255, b.float() / 255
    to_b = r.translate_batch(a, "B").cpu()
    to_a = r.translate_batch(b, "A").cpu()
    result = {
        "A->B: untranslated testA vs T(testA)": scores(fa, fb),
        "A->B: G(testA) vs T(testA)": scores(to_b, fb),
        "B->A: untranslated testB vs testA": scores(fb, fa),
        "B->A: F(testB) vs testA": scores(to_a, fa),
    }
    from gankit import viz

    tiles = torch.stack([t for i in range(4) for t in (fa[i], to_b[i], fb[i], to_a[i])])
    viz.save_image(viz.make_grid(tiles, nrow=4), out / "panel.png")
    print(json.dumps(result, indent=2))
    log = ResultLog("cyclegan-check")
    log.add(result, echo=False)
    log.write()
    print(f"panel (columns: testA | G(testA) | true T(testA) | F(T(testA))): {out / 'panel.png'}")


if __name__ == "__main__":
    main()
