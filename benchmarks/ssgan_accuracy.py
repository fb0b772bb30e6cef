"""Fashion-MNIST test accuracy of the SSGAN and of its supervised control over several label draws.

    python benchmarks/ssgan_accuracy.py --data-dir /usr/share/datasets/fashion-mnist --seeds 0 1 2

For each seed (= label draw): an SSGAN run and a `--baseline supervised` run on the very same
labelled images (passed with --labels-file) and the same held-out validation split (5,000 training
images, never labelled, never trained on), both evaluated with `gankit evaluate`: validation accuracy
(what settings are selected on) and the full 10,000-image test set, read once per final run. Prints one
JSON line per run, then mean and std per method. `--no-control` skips the supervised runs (for
selecting settings on validation; a later call with --skip-existing adds them). Options of the
recipe other than the defaults: `--set KEY=VALUE` (e.g. --set epochs=30 --set augment=none); the
control gets the same ones. Seeds can run in separate processes with the same --out, then
`--skip-existing` collects them all.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_train import apply_sets
from common import ResultLog  # noqa: E402  (this folder)

import gankit
from gankit.recipes.ssgan import SSGANConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--set", action="append", default=[], help="recipe option KEY=VALUE (repeatable)")
    ap.add_argument("--out", default="runs/ssgan-accuracy")
    ap.add_argument("--skip-existing", action="store_true", help="reuse finished runs in --out")
    ap.add_argument("--no-control", action="store_true", help="SSGAN runs only")
    args = ap.parse_args()
    cfg = SSGANConfig()
    if args.epochs is not None:
        cfg.epochs = args.epochs
    apply_sets(cfg, args.set)
    options = {k: getattr(cfg, k) for k in ["epochs", *(s.partition("=")[0] for s in args.set)]}
    log = ResultLog("ssgan-accuracy")
    results: dict[str, list[float]] = {"ssgan": [], "supervised": []}
    val_results: dict[str, list[float]] = {"ssgan": [], "supervised": []}
    for seed in args.seeds:
        ss_dir = Path(args.out) / f"ssgan-seed{seed}"
        runs = [
            ("ssgan", ss_dir, {"labels": args.labels}),
            (
                "supervised",
                Path(args.out) / f"supervised-seed{seed}",
                {"baseline": "supervised", "labels_file": str(ss_dir / "labelled_indices.json")},
            ),
        ]
        for method, run, extra in runs[:1] if args.no_control else runs:
            if not (args.skip_existing and (run / "train_wall_s.txt").exists()):
                t0 = time.perf_counter()
                gankit.train(
                    "ssgan",
                    data=args.data,
                    data_dir=args.data_dir,
                    seed=seed,
                    out=str(run),
                    progress=False,
                    **options,
                    **extra,
                )
                (run / "train_wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
            wall = float((run / "train_wall_s.txt").read_text())
            report = gankit.api.evaluate(run)
            acc = report["accuracy"]
            results[method].append(acc)
            val_results[method].append(report.get("validation_accuracy", float("nan")))
            log.add(
                {
                    "method": method,
                    "seed": seed,
                    "test_accuracy": acc,
                    "validation_accuracy": report.get("validation_accuracy"),
                    "test_images": report["count"],
                    "train_wall_s": round(wall, 1),
                    "run": str(run),
                }
            )
    for method, accs in results.items():
        if not accs:
            continue
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        log.add(
            {
                "method": method,
                "summary": True,
                "mean": round(statistics.mean(accs), 4),
                "std": round(sd, 4),
                "validation_mean": round(statistics.mean(val_results[method]), 4),
                "draws": len(accs),
                "options": options,
                "labels": args.labels,
            }
        )
    log.write()


if __name__ == "__main__":
    main()
