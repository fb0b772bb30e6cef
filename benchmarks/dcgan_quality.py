"""Sample quality of DCGAN's speed defaults: fp32 vs bf16 autocast, the fast CPU dropout vs nn.Dropout.

    python benchmarks/dcgan_quality.py --data-dir /usr/share/datasets/fashion-mnist \
        --variants fp32 bf16 torch-dropout --epochs 5 --num-samples 5000 --feature-precision bf16

Each variant trains DCGAN on full Fashion-MNIST for the same number of steps from the same seed
(batch 64, Adam 2e-4/0.5, generator EMA 0.999; only the named thing changes), then `gankit evaluate`
scores it at one protocol (samples vs the 10,000 test images, standard Inception pool3). Variants:
`fp32` and `bf16` (--precision; bf16 runs the generator's 7 px layer in the frequency domain where
this machine measured it faster), `bf16-direct` (bf16 with that layer on oneDNN's direct kernel,
GANKIT_CPU_FREQUENCY_CONV=off in this process), `torch-dropout` (fp32 with the discriminator's fast
dropout mask off, GANKIT_CPU_FAST_DROPOUT=off in this process). `--curve-every N` adds --eval-every N
to the first variant: FID of 1,000 samples vs 1,000 training images along training (the evaluation
guide's curve). Variants may run in separate processes with the same --out; prints one JSON line per
variant.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import ResultLog  # noqa: E402  (this folder)

import gankit
from gankit.cpu.settings import env_name, refresh

VARIANTS = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "bf16-direct": {"precision": "bf16"},
    "torch-dropout": {"precision": "fp32"},
}


def use_torch_dropout() -> None:
    """Swap the fast CPU mask for the stock kernel in this process (the benchmark's control)."""
    os.environ[env_name("fast_dropout")] = "off"
    refresh()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--feature-precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--curve-every", type=int, default=0, help="--eval-every of the first variant")
    ap.add_argument("--extractor", default=None, help="local TorchScript Inception (default: download)")
    ap.add_argument("--out", default="runs/dcgan-quality")
    args = ap.parse_args()
    environ_frequency = os.environ.get(env_name("frequency_conv"), "auto")
    log = ResultLog("dcgan-quality")
    for i, name in enumerate(args.variants):
        run = Path(args.out) / name
        if name == "torch-dropout":
            use_torch_dropout()
        os.environ[env_name("frequency_conv")] = "off" if name == "bf16-direct" else environ_frequency
        refresh()
        if not (run / "train_wall_s.txt").exists():
            t0 = time.perf_counter()
            summary = gankit.train(
                "dcgan",
                data=args.data,
                data_dir=args.data_dir,
                epochs=args.epochs,
                batch_size=64,
                lr=2e-4,
                beta1=0.5,
                ema=0.999,
                seed=args.seed,
                preview_every=1,
                eval_every=args.curve_every if i == 0 else 0,
                extractor=args.extractor,
                out=str(run),
                progress=False,
                **VARIANTS[name],
            )
            wall = time.perf_counter() - t0
            (run / "train_wall_s.txt").write_text(f"{wall:.1f} {summary['images_per_s']:.1f}\n")
        wall, ips = map(float, (run / "train_wall_s.txt").read_text().split())
        r = gankit.api.evaluate(
            run,
            num_samples=args.num_samples,
            extractor=args.extractor,
            feature_precision=args.feature_precision,
            seed=args.seed,
        )
        m = r["metrics"]
        log.add(
            {
                "variant": name,
                "epochs": args.epochs,
                "fid": round(m["fid"], 3),
                "kid": round(m["kid"], 6),
                "kid_std": round(m["kid_std"], 6),
                "precision": round(m["precision"], 4),
                "recall": round(m["recall"], 4),
                "samples": args.num_samples,
                "feature_precision": args.feature_precision,
                "train_wall_s": wall,
                "images_per_s": ips,
                "threads": torch.get_num_threads(),
                "run": str(run),
            }
        )
    log.write()


if __name__ == "__main__":
    main()
