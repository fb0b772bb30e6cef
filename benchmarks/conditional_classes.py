"""Does a class-conditional generator draw the class it is asked for? Recognition by an independent
classifier, and FID per class.

    python benchmarks/conditional_classes.py --data-dir /usr/share/datasets/fashion-mnist \
        --steps 4000 --judge-epochs 3 --extractor PATH/TO/default_1.pt
    python benchmarks/conditional_classes.py --recipe csngan --set ngf=64 ndf=64 --steps 2500 ...

Protocol. The judge: gankit's ssgan recipe with `--baseline supervised` (its classifier alone) on all
Fashion-MNIST training labels (85% of the rarest class's count from each class: 51,000; ssgan
holds out its validation split from the rest), seed 0; its accuracy on the 10,000 real test images is
the ceiling a perfect generator could reach. The generator: `gankit train RECIPE` (--recipe: cdcgan,
csngan or any class-conditional recipe) on the same training images (batch 64, generator EMA 0.999,
seed 0, the recipe's own defaults plus the --set options, --steps optimisation steps; 60,000 images
is above the small-data threshold, so DiffAugment stays off). Then 10,000 EMA samples, 1,000 per class
(seed 0): the share the judge assigns to the requested class, per class; and FID (Inception pool3,
299 px, fp32 features) of all of them against the 10,000 test images, and of each class's 1,000 against
that class's 1,000 test images (smaller counts: biased upwards against the overall figure); and the
within-class spread: the per-pixel standard deviation across a class's generated images, averaged over
pixels, divided by the same for its real test images (1.0: as varied as the real class; near 0: one
image whatever the noise, a per-class mode collapse).
Writes benchmarks/results/<stamp>-RECIPE-classes.json + .md and the class-by-row grid
docs/assets/RECIPE_classes.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import gankit
from gankit import api, viz
from gankit.data import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_result  # noqa: E402
from small_data import parse_sets, stored_step  # noqa: E402


def spread(images: torch.Tensor) -> float:
    """Per-pixel standard deviation across images (uint8 or [0, 1]), averaged over pixels, in [0, 1] units."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return x.std(0).mean().item()


@torch.no_grad()
def predict(judge, images: torch.Tensor) -> torch.Tensor:
    """The judge's class for uint8 or [0, 1] images (N, C, H, W)."""
    spec = judge.classifier_spec()
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return torch.cat([spec.module((part - mean) / std).argmax(1) for part in x.split(500)])


def markdown(result: dict, stamp: str) -> str:
    """The result file's table, from the JSON alone (benchmarks/render_results.py renders it too)."""
    per_class = result["per_class"]
    recipe = result.get("recipe", "cdcgan")  # files written before --recipe existed: cdcgan's
    lines = [
        f"# {recipe}: the requested class, recognised ({result['machine']['cpu']}, {stamp})",
        "",
        f"`{result['command']}`",
        "",
        f"Judge (supervised ssgan classifier) on the real test set: {result['judge_test_accuracy']:.1%}. "
        f"Generated images recognised as the requested class: {result['recognised']:.1%}. "
        f"FID (10k vs test 10k): {result['fid']:.2f}."
        + (  # files written before these were measured leave them out
            f" Within-class spread (generated / real, mean over classes): {result['spread']:.3f}."
            if "spread" in result
            else ""
        )
        + (
            f" Mode-seeking weight: {result['mode_seeking']}."
            if result.get("mode_seeking") is not None
            else ""
        )
        + (
            f" Generator trained {result['steps']} steps in {result['train_s'] / 60:.0f} min."
            if "train_s" in result
            else ""
        ),
        "",
        "| class | recognised (generated) | judge on real test | FID of the class (1k vs 1k) | spread |",
        "|---|---|---|---|---|",
    ]
    for name, v in per_class.items():
        lines.append(
            f"| {name} | {v['recognised']:.1%} | {v['judge_on_real']:.1%} | {v.get('fid', float('nan')):.1f} "
            f"| {format(v['spread'], '.3f') if 'spread' in v else ''} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--num-samples", type=int, default=10000, help="for the overall FID (standard: 10,000)")
    ap.add_argument("--recipe", default="cdcgan", help="a class-conditional recipe")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more options of the recipe")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--judge-epochs", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--mode-seeking", type=float, default=None, help="cdcgan's --mode-seeking weight")
    ap.add_argument("--extractor", default=None)
    ap.add_argument("--out", default=None, help="default: runs/RECIPE-classes")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    out = Path(args.out or f"runs/{args.recipe}-classes")
    judge_run, gen_run = out / "judge", out / args.recipe
    options = parse_sets(args.set)
    if args.mode_seeking is not None:
        options["mode_seeking"] = args.mode_seeking
    options["max_steps"] = args.steps
    common = dict(data=args.data, data_dir=args.data_dir, seed=0, progress=False)
    # The judge learns from (nearly) every label: 85% of the rarest class's count per class, which
    # leaves room for the validation split ssgan holds out of the training images.
    counts = torch.bincount(load_dataset(args.data, "train", args.data_dir).labels)
    judge_labels = len(counts) * int(0.85 * counts.min().item())
    t0 = time.perf_counter()
    if not (judge_run / "config.json").exists():
        gankit.train(
            "ssgan",
            out=str(judge_run),
            baseline="supervised",
            labels=judge_labels,
            epochs=args.judge_epochs,
            **common,
        )
    judge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (gen_run / "config.json").exists():
        settings = dict(batch_size=64, ema=0.999, preview_every=1000, checkpoint_every=1000)
        gankit.train(args.recipe, out=str(gen_run), **{**settings, **options}, **common)
    gen_s = time.perf_counter() - t0

    judge = api.load_recipe(judge_run)
    test = load_dataset(args.data, "test", args.data_dir)
    real_pred = predict(judge, test.images)
    gen = api.load_recipe(gen_run)
    names = gen.cfg.class_names
    k = len(names)
    labels = torch.arange(k).repeat_interleave(args.per_class)
    fake = gen.sample(len(labels), seed=0, labels=labels)
    fake_pred = predict(judge, fake)
    per_class = {}
    for c, name in enumerate(names):
        per_class[name] = {
            "recognised": round((fake_pred[labels == c] == c).float().mean().item(), 4),
            "judge_on_real": round((real_pred[test.labels == c] == c).float().mean().item(), 4),
            "spread": round(spread(fake[labels == c]) / spread(test.images[test.labels == c]), 3),
        }
    report = api.evaluate(gen_run, extractor=args.extractor, num_samples=args.num_samples)
    for name, v in report.get("per_class", {}).items():
        per_class[name]["fid"] = v["fid"]
    result = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "judge_test_accuracy": round((real_pred == test.labels).float().mean().item(), 4),
        "recognised": round((fake_pred == labels).float().mean().item(), 4),
        "spread": round(sum(v["spread"] for v in per_class.values()) / k, 3),
        "recipe": args.recipe,
        "options": options,
        "mode_seeking": getattr(gen.cfg, "mode_seeking", None),
        "fid": report["metrics"]["fid"],
        "per_class": per_class,
        "judge_train_s": round(judge_s, 1),
        "train_s": round(gen_s, 1),
        "steps": stored_step(gen_run),
        "auto_precision": gen.cfg.auto_precision,
    }
    write_result(Path(args.results), f"{args.recipe}-classes", result, markdown)
    grid = gen.sample(k * 8, seed=1, labels=torch.arange(k).repeat_interleave(8))
    viz.save_grid(grid, f"docs/assets/{args.recipe}_classes.png", nrow=8)


if __name__ == "__main__":
    main()
