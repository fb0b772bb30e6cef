"""Kill -9 every recipe at a random step, resume it with twice the epochs, and print its LR trace.

For each registered recipe: `gankit train` on small synthetic data in the recipe's data format, killed
with SIGKILL once it passes a randomly drawn step (past its first checkpoint), then
`gankit train --resume RUN --epochs 2E`. The learning rate logged in metrics.jsonl must continue from
the checkpoint and reach zero only at the new end (for recipes whose schedule decays to zero).

    python scripts/kill_resume_check.py --out /tmp/killcheck [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gankit.recipes import RECIPES

EPOCHS = 2


def _idx(path: Path, a: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    path.write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))


def _blobs(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Soft bright blobs at random places: (n, size, size) uint8."""
    yy, xx = np.mgrid[:size, :size]
    c = rng.uniform(0.25, 0.75, (n, 2, 1, 1)) * size
    return (255 * np.exp(-((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) / (0.02 * size**2))).astype(np.uint8)


def make_data(fmt: str, root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    if fmt in ("images", "labelled"):
        folder = root / "idx"
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 2048), ("t10k", 256)):
            _idx(folder / f"{split}-images-idx3-ubyte.gz", _blobs(n, 28, rng))
            _idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
        return ["--data", "mnist", "--data-dir", str(folder)]
    colour = lambda a: np.stack([a, a[::-1], 255 - a], -1)  # noqa: E731
    if fmt == "aligned":
        for split, n in (("train", 12), ("val", 2)):
            for i, a in enumerate(_blobs(n, 72, rng)):
                (root / "pairs" / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate([colour(a), colour(255 - a)], 1)).save(
                    root / "pairs" / split / f"{i}.png"
                )
        return ["--data", str(root / "pairs"), "--image-size", "64", "--decay-epochs", "1"]
    for split, n in (("train", 12), ("test", 2)):
        for dom in "AB":
            folder = root / "domains" / f"{split}{dom}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(_blobs(n, 72, rng)):
                Image.fromarray(colour(a if dom == "A" else 255 - a)).save(folder / f"{i}.png")
    return ["--data", str(root / "domains"), "--image-size", "64"]


def metrics(run: Path) -> list[dict]:
    if not (run / "metrics.jsonl").exists():
        return []
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by the kill
    return out


def check(name: str, root: Path, rng: random.Random) -> dict:
    cls = RECIPES[name]
    data = make_data(cls.data_format, root / "data")
    run = root / name
    extra = ["--batch-size", "32"] if cls.data_format in ("images", "labelled") else []
    extra += ["--labels", "100"] if cls.data_format == "labelled" else []
    args = [*data, *extra, "--epochs", str(EPOCHS), "--log-every", "1", "--checkpoint-every", "4"]
    cmd = [sys.executable, "-m", "gankit", "train", name, *args, "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    total = total_steps(cmd)
    target = rng.randint(5, total - 2)  # past the first checkpoint (step 4), before the end
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    while proc.poll() is None:
        recs = metrics(run)
        if recs and recs[-1]["step"] >= target:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    killed_at = max((r["step"] for r in metrics(run)), default=0)
    resumed_from = int(sorted((run / "checkpoints").glob("step-*"))[-1].stem.split("-")[1])
    p = subprocess.run(
        [sys.executable, "-m", "gankit", "train", "--resume", str(run), "--epochs", str(2 * EPOCHS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    recs = [r for r in metrics(run) if any(k.startswith("lr_") for k in r)]
    key = next(k for k in recs[-1] if k.startswith("lr_"))
    trace = [(r["step"], r[key]) for r in recs]
    steps = [s for s, _ in trace]
    assert steps == sorted(set(steps)) and steps == list(range(1, steps[-1] + 1)), "log has gaps or repeats"
    old_end = steps[-1] // 2
    zero_at = [s for s, lr in trace if lr == 0.0]
    return {
        "recipe": name,
        "kill_drawn_at_step": target,
        "killed_after_step": killed_at,
        "resumed_from_checkpoint": resumed_from,
        "old_end": old_end,
        "new_end": steps[-1],
        "lr_key": key,
        "lr_at": {
            s: lr
            for s, lr in trace
            if s in (1, resumed_from, resumed_from + 1, old_end, old_end + 1, steps[-1])
        },
        "lr_zero_only_at_new_end": zero_at in ([], [steps[-1]]),
        "decays_to_zero": bool(zero_at),
    }


def total_steps(cmd: list[str]) -> int:
    """The run's length: its recipe built on its data, as `gankit train` would, without training."""
    from gankit.cli import build_parser
    from gankit.recipes import get_recipe

    ns = build_parser().parse_args(cmd[3:])
    opts = {k: v for k, v in vars(ns).items() if k not in ("command", "recipe", "json")}
    from gankit.api import make_config

    cfg = make_config(ns.recipe, **opts)
    cls = get_recipe(ns.recipe)
    data = cls.load_data(cfg)
    r = cls(cfg, __import__("torch").device("cpu"))
    r.attach_data(data)
    return cfg.total_steps(len(r.batches))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/gankit-killcheck")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="*", default=sorted(RECIPES))
    ns = ap.parse_args()
    rng = random.Random(ns.seed)
    results = []
    for name in ns.recipes:
        r = check(name, Path(ns.out), rng)
        results.append(r)
        print(json.dumps(r), flush=True)
    assert all(r["lr_zero_only_at_new_end"] for r in results)


if __name__ == "__main__":
    main()
