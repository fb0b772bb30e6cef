"""How long the offline demo must train: sample quality of `gankit demo`'s DCGAN along its run.

    python benchmarks/demo_length.py --data-dir /usr/share/datasets/fashion-mnist \
        --variant b64 --epochs 6 8 10 15 20 30

Trains the demo's configuration (the embedded 4,000-image Fashion-MNIST subset, 28 px) with the
changes a variant names, stopping at each of --epochs in turn (a run extended with `resume`, which
equals an uninterrupted run: constant learning rate, checkpointed RNG), and scores both the live
generator and its EMA (--ema, default 0.99: a 0.999 average still holds ~60% of the initial weights
after the ~500 steps of a short demo; the average never feeds back into training, so one run gives
both) at each stop. Protocol: 500 samples (seed 0) against 1,000 **validation** images, Fashion-MNIST
training images outside the embedded subset (never the test split), standard Inception pool3 (fp32
features, 299 px); FID and KID x 1e3. Prints one JSON line per stop with the wall time trained so far.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import ResultLog  # noqa: E402  (this folder)

import gankit
from gankit.api import load_recipe
from gankit.data import load_dataset
from gankit.data.embedded import load_embedded
from gankit.metrics.quality import RealSet, evaluate_samples, to_uint8
from gankit.recipes.dcgan import DCGAN, sample

VARIANTS = {  # on top of the demo's options (embedded data, Adam beta1 0.5, ...)
    "b64": {"batch_size": 64, "lr": 2e-4},  # the demo's batch and learning rate
    "b64-lr4": {"batch_size": 64, "lr": 4e-4},
    "b128": {"batch_size": 128, "lr": 2e-4},
    "b128-lr4": {"batch_size": 128, "lr": 4e-4},
}


def validation_set(data_dir: str, count: int) -> RealSet:
    """`count` Fashion-MNIST training images that are not in the embedded subset (fixed draw)."""
    full = load_dataset("fashion-mnist", "train", data_dir, 28, 1).images
    embedded = {bytes(x.numpy().tobytes()) for x in load_embedded("train").images}
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(1234))
    picks = [int(i) for i in order if bytes(full[i].numpy().tobytes()) not in embedded][:count]
    return RealSet(full[picks], "fashion-mnist:train (outside the embedded subset)", "val")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="full Fashion-MNIST IDX files (the validation images)")
    ap.add_argument("--variant", default="b64", choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, nargs="+", default=[6, 8, 10, 15, 20, 30])
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0, help="the training run's --seed")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--real", type=int, default=1000)
    ap.add_argument("--extractor", default=None, help="local TorchScript Inception (default: download)")
    ap.add_argument("--out", default="runs/demo-length")
    args = ap.parse_args()
    real = validation_set(args.data_dir, args.real)
    run = Path(args.out) / f"{args.variant}-seed{args.seed}"
    options = dict(DCGAN.demo_options, ema=args.ema, seed=args.seed, **VARIANTS[args.variant])
    trained = 0.0
    log = ResultLog("demo-length")
    for i, epochs in enumerate(sorted(args.epochs)):
        t0 = time.perf_counter()
        if i == 0:
            gankit.train("dcgan", progress=False, **dict(options, epochs=epochs, out=str(run)))
        else:
            gankit.resume(run, progress=False, epochs=epochs)
        trained += time.perf_counter() - t0
        recipe = load_recipe(run)
        row = {"variant": args.variant, "seed": args.seed, "epochs": epochs, "train_s": round(trained, 1)}
        for name, module in (("live", recipe.generator), ("ema", recipe.inference_module())):
            fake = to_uint8(sample(module, args.samples, seed=0))
            m = evaluate_samples(fake, real, args.extractor, progress=False)["metrics"]
            row[name] = {"fid": round(m["fid"], 2), "kid_x1e3": round(m["kid"] * 1000, 2)}
        log.add(row)
    log.write()


if __name__ == "__main__":
    main()
