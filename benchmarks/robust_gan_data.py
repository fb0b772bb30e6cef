"""Robust accuracy learnt from GAN data: the SSGAN setting (1,000 labels), three ways, under AutoAttack.

    python benchmarks/robust_gan_data.py --data-dir /usr/share/datasets/fashion-mnist

One seed, one label draw, the same 5,000 held-out validation images everywhere (never labelled, never
trained on: the robust runs select their best checkpoint on them), then one AutoAttack read of the
test split per final run:

- the pseudo-labeller: `gankit train ssgan --labels 1000` (its own labelled subset);
- the generator: `gankit train cdcgan` on a labelled folder holding those 1,000 labelled images and
  the other training images (validation excluded) under the SSGAN's labels: a class-conditional
  generator learnt without any label beyond the 1,000;
- (a) `gankit train robust --labels 1000`: PGD training on the labelled images alone;
- (b) (a) plus the other training images pseudo-labelled by the SSGAN (`--unlabelled rest
  --pseudo-labeller`; robust self-training, Carmon et al. 2019);
- (c) (b) plus cDCGAN samples (`--generated`).

(a), (b) and (c) make the same number of steps of the same batch size, with the same PGD, schedule,
EMA and validation; they differ only in what fills the batches. The labelled images of every run are
checked to be the SSGAN's. Each row records the run's training time and its AutoAttack report (clean
and robust accuracy, per-attack breakdown, protocol). `--skip-existing` reuses finished runs in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_train import apply_sets
from common import ResultLog  # noqa: E402  (this folder)

import gankit
from gankit.attacks import robustness
from gankit.recipes.robust import RobustConfig


def trained(recipe: str, run: Path, skip: bool, **options) -> float:
    """Train `recipe` into `run` (unless --skip-existing finds it finished); its wall time in s."""
    done = run / "train_wall_s.txt"
    if not (skip and done.exists()):
        t0 = time.perf_counter()
        gankit.train(recipe, out=str(run), progress=False, **options)
        done.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return float(done.read_text())


def indices(run: Path, name: str) -> list[int]:
    return json.loads((run / name).read_text())["indices"]


def pseudo_labelled_folder(ssgan: Path, data: str, data_dir: str | None, folder: Path) -> dict:
    """The training images outside the SSGAN's validation split, as a labelled folder: its labelled
    images under their labels, the others under the SSGAN's predictions. Returns the pseudo-labels'
    accuracy against the true labels (training images: the test split stays unread)."""
    from PIL import Image

    from gankit.data import load_dataset

    train = load_dataset(data, "train", data_dir)
    labelled = torch.tensor(indices(ssgan, "labelled_indices.json"))
    held = torch.tensor(indices(ssgan, "validation_indices.json"))
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[labelled] = False
    rest[held] = False
    rest = torch.nonzero(rest).flatten()
    pred = _predict(ssgan, train.images[rest])
    labels = torch.cat([train.labels[labelled], pred])
    images = torch.cat([train.images[labelled], train.images[rest]])
    if not (folder / "done").exists():
        for c in range(int(labels.max()) + 1):
            (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (x, y) in enumerate(zip(images, labels.tolist())):
            Image.fromarray(x[0].numpy()).save(folder / str(y) / f"{i:05d}.png")
        (folder / "done").write_text("")
    return {
        "pseudo_labelled": len(rest),
        "pseudo_label_accuracy": round(float((pred == train.labels[rest]).float().mean()), 4),
    }


def _predict(run: Path, images: torch.Tensor) -> torch.Tensor:
    from gankit.attacks.classifiers import load_classifier

    clf = load_classifier(str(run)).eval()
    with torch.no_grad():
        return torch.cat([clf(b.float().div(255)).argmax(1) for b in images.split(500)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=1500, help="steps of each robust run")
    ap.add_argument("--ssgan-steps", type=int, default=None, help="default: the recipe's 8 epochs")
    ap.add_argument("--cdcgan-steps", type=int, default=3000)
    ap.add_argument("--unlabelled-ratio", type=float, default=0.5, help="(b); (c) gives half to each")
    ap.add_argument("--count", type=int, default=None, help="test images attacked (default: all)")
    ap.add_argument("--aa-batch", type=int, default=500, help="AutoAttack batch size")
    ap.add_argument("--only", nargs="+", default=["a", "b", "c"], help="which robust runs")
    ap.add_argument("--set", action="append", default=[], help="robust option KEY=VALUE (repeatable)")
    ap.add_argument("--out", default="runs/robust-gan-data")
    ap.add_argument("--skip-existing", action="store_true", help="reuse finished runs in --out")
    args = ap.parse_args()
    out = Path(args.out)
    common = dict(data=args.data, data_dir=args.data_dir, seed=args.seed)
    cfg = RobustConfig(eps_warmup=0.2, ema=0.999, eval_every=100)
    apply_sets(cfg, args.set)
    robust = {
        k: getattr(cfg, k)
        for k in ["eps_warmup", "ema", "eval_every", *(s.partition("=")[0] for s in args.set)]
    }
    robust.update(eps=args.eps, labels=args.labels, max_steps=args.steps, epochs=100_000)
    log = ResultLog("robust-gan-data")

    ssgan = out / "ssgan"
    wall = trained(
        "ssgan", ssgan, args.skip_existing, labels=args.labels, max_steps=args.ssgan_steps, **common
    )
    folder = out / "pseudo-labelled"
    log.add(
        {
            "run": "ssgan",
            "train_wall_s": wall,
            **pseudo_labelled_folder(ssgan, args.data, args.data_dir, folder),
        }
    )
    cdcgan = out / "cdcgan"
    if "c" in args.only:  # only (c) draws from the generator
        wall = trained(
            "cdcgan",
            cdcgan,
            args.skip_existing,
            data=str(folder),
            seed=args.seed,
            image_size=28,
            channels=1,
            max_steps=args.cdcgan_steps,
        )
        log.add({"run": "cdcgan", "train_wall_s": wall, "data": "labelled + pseudo-labelled folder"})

    half = args.unlabelled_ratio / 2
    extra = {
        "a": {},
        "b": dict(unlabelled="rest", pseudo_labeller=str(ssgan), unlabelled_ratio=args.unlabelled_ratio),
        "c": dict(
            unlabelled="rest",
            pseudo_labeller=str(ssgan),
            unlabelled_ratio=half,
            generated=str(cdcgan),
            generated_ratio=half,
        ),
    }
    test = args.data_dir or args.data
    for name in args.only:
        run = out / f"robust-{name}"
        wall = trained("robust", run, args.skip_existing, **common, **robust, **extra[name])
        if indices(run, "labelled_indices.json") != indices(ssgan, "labelled_indices.json"):
            raise SystemExit(f"{run}: its labelled images are not the SSGAN's")
        kept = run / "checkpoints" / "best.json"
        best = json.loads(kept.read_text()) if kept.exists() else None
        t0 = time.perf_counter()
        r = robustness(
            str(run),
            test,
            ["autoattack"],
            str(args.eps),
            run / "autoattack",
            count=args.count,
            checkpoint="best",
            batch_size=args.aa_batch,
            seed=args.seed,
        )
        row = r["rows"][0]
        log.add(
            {
                "run": f"robust ({name})",
                "sources": json.loads((run / "sources.json").read_text()),
                "train_wall_s": wall,
                "best": best,
                "clean_accuracy": r["clean_accuracy"],
                "robust_accuracy": row["robust_accuracy"],
                "breakdown": row.get("breakdown"),
                "protocol": r["protocol"],
                "test_images": r["count"],
                "autoattack_s": round(time.perf_counter() - t0, 1),
                "warnings": r["warnings"],
                "options": {**robust, **extra[name]},
            }
        )
    log.write()


if __name__ == "__main__":
    main()
