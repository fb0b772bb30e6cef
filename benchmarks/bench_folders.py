"""Large image folders: in memory vs the decoded-image cache (data/decoded.py).

Makes a folder of N JPEG photos-like images (default 10,000 at 256 px, smooth colour fields plus
noise), then trains from it with `gankit train` in separate processes and reports, per path: the
wall time to the end of the first step (start-up, listing, decoding, first step), training images/s
over a longer run, and the peak resident memory of the process (`/usr/bin/time`).

    python benchmarks/bench_folders.py --root /tmp/folder10k --recipe dcgan --image-size 64 --steps 200

Paths: `memory` (the default budget: decoded into RAM), `cache-cold` (a budget below the folder's
size and an empty cache: decoded once into the cache file) and `cache-warm` (the same, cache present).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ResultLog  # noqa: E402  (this folder)
from PIL import Image


def make_folder(root: Path, n: int, size: int) -> None:
    """n photo-like JPEGs (smooth random colour fields plus noise) under root/A and root/B."""
    if root.is_dir() and len(list(root.rglob("*.jpg"))) >= n:
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        dom = root / ("A" if i % 2 == 0 else "B")
        dom.mkdir(parents=True, exist_ok=True)
        c = rng.uniform(0, 1, (3, 3))
        img = np.stack([c[k, 0] * yy + c[k, 1] * xx + c[k, 2] for k in range(3)], -1) * 120
        img = img + rng.normal(0, 12, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(dom / f"{i:05d}.jpg", quality=90)


def run(args: list[str], env: dict) -> dict:
    """One `gankit train` process: its wall seconds, peak RSS and JSON summary."""
    with tempfile.NamedTemporaryFile("r") as t:
        cmd = ["/usr/bin/time", "-f", "%e %M", "-o", t.name, sys.executable, "-m", "gankit", "train", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if p.returncode != 0:
            raise SystemExit(p.stderr[-2000:])
        wall, rss_kb = t.read().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": round(int(rss_kb) / 1024), **json.loads(p.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/gankit-folder")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--source-size", type=int, default=256)
    ap.add_argument("--recipe", default="dcgan", choices=["dcgan", "cyclegan"])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    root = Path(args.root)
    make_folder(root, args.count, args.source_size)
    stored = round(args.image_size * 286 / 256) if args.recipe == "cyclegan" else args.image_size  # load size
    decoded = args.count * 3 * stored**2
    cache = Path(tempfile.mkdtemp(prefix="gankit-bench-cache-"))
    paths = {
        "memory": {"GANKIT_MEMORY_BUDGET": str(4 * decoded)},
        "cache-cold": {"GANKIT_MEMORY_BUDGET": str(decoded // 4)},
        "cache-warm": {"GANKIT_MEMORY_BUDGET": str(decoded // 4)},
    }
    common = ["--data", str(root), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    common += ["--json", "--log-every", "10"]
    what = "two domains A/ and B/" if args.recipe == "cyclegan" else "one folder"
    print(
        f"{args.count} images of {args.source_size} px in {what} -> {args.image_size} px, {args.recipe}; "
        f"decoded {decoded / 2**30:.2f} GiB",
        flush=True,
    )
    log = ResultLog("bench-folders")
    for name, env in paths.items():
        if name == "cache-cold":
            shutil.rmtree(cache / "decoded", ignore_errors=True)
        env = {**env, "GANKIT_DATA": str(cache)}
        out = Path(tempfile.mkdtemp(prefix="gankit-bench-run-"))
        first = run([args.recipe, *common, "--max-steps", "1", "--out", str(out / "first")], env)
        long = run([args.recipe, *common, "--max-steps", str(args.steps), "--out", str(out / "long")], env)
        row = {"path": name, "first_step_wall_s": first["wall_s"], "images_per_s": long["images_per_s"]}
        row.update(peak_rss_mb=max(first["peak_rss_mb"], long["peak_rss_mb"]), steps=long["steps"])
        log.add(row)
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    log.write()


if __name__ == "__main__":
    main()
