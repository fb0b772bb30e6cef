"""FID over training time on Fashion-MNIST: generator configurations side by side at equal training
time, chosen on a validation FID, the test split read once for the chosen one.

    python benchmarks/gan_fid.py --data-dir /usr/share/datasets/fashion-mnist \
        --configs dcgan=dcgan:lr=2e-4,beta1=0.5 sngan64=sngan:ngf=64,ndf=64 \
        --minutes 60 --chunk 1000 --extractor PATH/TO/default_1.pt

Protocol. A fixed random permutation (seed 0) of the 60,000 training images: the last 5,000 are a
held-out validation set that no run trains on, the first 55,000 the training folder (IDX files). Every
configuration `NAME=RECIPE:key=value,...` trains from seed 0 at batch 64 and 28 px, the recipes' size
for IDX data (unless it sets otherwise); the configurations advance --chunk steps each in turn (stop
and exact resume, as the resume tests show), until each has trained for --minutes of wall-clock
training time (the training calls, each chunk's start and resume included, FID excluded: concurrent
load on the machine shortens a run in steps). After each chunk: validation FID of --val-samples EMA
samples (seed 0) against the 5,000 held-out images (Inception pool3, 299 px, fp32 features).
Selection: the lowest validation FID over every configuration's chunks; the test split is then read
once, for that configuration's checkpoint at that chunk: FID of 10,000 EMA samples (seed 0) against
the 10,000 test images (the standard protocol). --test-each reads the test split for each
configuration's best chunk instead (a comparison of recipes, each selected on validation). A stopped
script continues with the same command: each run records its curve in its folder.
Writes benchmarks/results/<stamp>-gan-fid.json and the figure docs/assets/gan_fid.png (--figure).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import gankit
from gankit import api
from gankit.data import load_dataset
from gankit.io import write_json_atomic
from gankit.metrics.quality import RealSet, evaluate_samples, to_uint8

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultLog  # noqa: E402
from small_data import parse_sets, stored_step, write_idx  # noqa: E402

CURVE = "gan-fid-curve.json"


def parse_config(spec: str) -> tuple[str, str, dict]:
    """`NAME=RECIPE:key=value,...` -> (name, recipe, options)."""
    name, _, rest = spec.partition("=")
    recipe, _, sets = rest.partition(":")
    if not name or not recipe:
        raise SystemExit(f"--configs {spec}: expected NAME=RECIPE[:key=value,...]")
    return name, recipe, parse_sets([s for s in sets.split(",") if s])


BEST = "best-validation.safetensors"  # a copy of the checkpoint of the run's lowest validation FID


def fid_of(run: Path, checkpoint: Path | None, n: int, real: RealSet, extractor: str | None) -> float:
    """FID of n EMA samples (seed 0) of a checkpoint of the run (default: its latest) against `real`."""
    r = api.load_recipe(run, checkpoint=str(checkpoint) if checkpoint else "latest")
    fake = to_uint8(r.sample(n, seed=0))
    report = evaluate_samples(fake, real, extractor, "fp32", progress=False)
    return round(report["metrics"]["fid"], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--configs", nargs="+", required=True, help="NAME=RECIPE:key=value,...")
    ap.add_argument("--minutes", type=float, default=60.0, help="training time of each configuration")
    ap.add_argument("--chunk", type=int, default=1000, help="steps between validation FIDs")
    ap.add_argument("--val-samples", type=int, default=2000)
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--test-each", action="store_true", help="read the test split for every config's best")
    ap.add_argument("--extractor", default=None)
    ap.add_argument("--out", default="runs/gan-fid")
    ap.add_argument("--figure", default="docs/assets/gan_fid.png")
    args = ap.parse_args()
    configs = [parse_config(c) for c in args.configs]

    train = load_dataset("fashion-mnist", "train", args.data_dir)
    perm = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))
    out = Path(args.out)
    folder = out / "data-55000"
    if not folder.is_dir():
        write_idx(folder, train.images[perm[:55000]], train.labels[perm[:55000]])
    held = RealSet(train.images[perm[55000:]], "fashion-mnist:train-held-out-5000", "validation")

    runs = {name: out / name for name, _, _ in configs}
    curves = {}
    for name, run in runs.items():
        path = run / CURVE
        kept = json.loads(path.read_text()) if path.is_file() else []
        curves[name] = [c for c in kept if c["step"] <= stored_step(run)]

    def trained_s(name: str) -> float:
        return curves[name][-1]["train_s"] if curves[name] else 0.0

    budget = args.minutes * 60
    while any(trained_s(name) < budget for name in runs):
        for name, recipe, options in configs:
            if trained_s(name) >= budget:
                continue
            run = runs[name]
            done = stored_step(run)
            stop = done + args.chunk
            t0 = time.perf_counter()
            if done == 0:
                shutil.rmtree(run, ignore_errors=True)  # a run killed before its first checkpoint
                opts = dict(data=str(folder), epochs=100_000, batch_size=64, seed=0, log_every=100)
                opts.update(preview_every=100_000, checkpoint_every=args.chunk, **options)
                gankit.train(recipe, progress=False, out=str(run), max_steps=stop, **opts)
            else:
                gankit.resume(run, progress=False, max_steps=stop)
            spent = trained_s(name) + time.perf_counter() - t0
            point = {
                "step": stored_step(run),
                "train_s": round(spent, 1),
                "validation_fid": fid_of(run, None, args.val_samples, held, args.extractor),
            }
            if point["validation_fid"] < min((c["validation_fid"] for c in curves[name]), default=1e9):
                latest = max((run / "checkpoints").glob("step-*.safetensors"))
                shutil.copyfile(latest, run / (BEST + ".tmp"))
                (run / (BEST + ".tmp")).replace(run / BEST)
            curves[name].append(point)
            write_json_atomic(run / CURVE, curves[name])
            print(json.dumps({"config": name, **point}), flush=True)

    log = ResultLog("gan-fid")
    best = {name: min(curves[name], key=lambda c: c["validation_fid"]) for name in runs}
    chosen = min(best, key=lambda name: best[name]["validation_fid"])
    test = load_dataset("fashion-mnist", "test", args.data_dir)
    real = RealSet(test.images, "fashion-mnist:test", "test")
    for name, recipe, options in configs:
        run = runs[name]
        row = {
            "config": name,
            "recipe": recipe,
            "options": options,
            "selected": name == chosen,
            "best_step": best[name]["step"],
            "best_train_min": round(best[name]["train_s"] / 60, 1),
            "validation_fid": best[name]["validation_fid"],
            "curve": curves[name],
        }
        if name == chosen or args.test_each:
            row["test_fid"] = fid_of(run, run / BEST, args.num_samples, real, args.extractor)
        log.add(row)
    log.write(
        protocol=__doc__.split("Protocol.")[1].split("Writes")[0].split(),
        minutes=args.minutes,
        val_samples=args.val_samples,
        num_samples=args.num_samples,
    )
    plot(log.rows, Path(args.figure))


def plot(rows: list[dict], path: Path) -> None:
    """Validation FID against training minutes, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for r in rows:
        minutes = [c["train_s"] / 60 for c in r["curve"]]
        test = f", test FID {r['test_fid']:.1f}" if "test_fid" in r else ""
        ax.plot(minutes, [c["validation_fid"] for c in r["curve"]], "o-", ms=3, label=f"{r['config']}{test}")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("validation FID")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
