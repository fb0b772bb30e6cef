"""A robust classifier beside its standard-trained twin: AutoAttack robust accuracy against epsilon.

    python benchmarks/robust_twin.py --data-dir /usr/share/datasets/fashion-mnist

Two `gankit train robust` runs of the same network, data, seed, steps, schedule, EMA and validation
split: one PGD-trained at --eps, its twin at --eps 0 (standard training: the ball is the image itself,
no attack is run). Each is read once with AutoAttack (standard version, Linf) on the first --count
test images at every epsilon of --curve, from its checkpoint kept on the validation split. Writes the
result rows (clean and robust accuracy, per-attack breakdown, protocol, training time) and one plot
of robust accuracy against epsilon for both (--plot, the README's figure). `--skip-existing` reuses
finished runs in --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_train import apply_sets
from common import ResultLog  # noqa: E402  (this folder)
from robust_gan_data import trained

from gankit.attacks import robustness
from gankit.recipes.robust import RobustConfig

ROOT = Path(__file__).resolve().parent.parent


def plot(curves: dict[str, list[tuple[float, float]]], title: str, path: Path) -> None:
    """Robust accuracy (%) against epsilon, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    for name, points in curves.items():
        eps, acc = zip(*points)
        ax.plot(eps, [100 * a for a in acc], marker="o", label=name)
    ax.set_xlabel("Linf epsilon (pixel scale [0, 1])")
    ax.set_ylabel("AutoAttack robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", type=float, default=0.1, help="training epsilon of the robust run")
    ap.add_argument("--curve", default="0.025,0.05,0.1,0.15", help="epsilons of the AutoAttack curve")
    ap.add_argument("--steps", type=int, default=1500, help="steps of each run")
    ap.add_argument("--count", type=int, default=None, help="test images attacked (default: all)")
    ap.add_argument("--aa-batch", type=int, default=500, help="AutoAttack batch size")
    ap.add_argument("--set", action="append", default=[], help="option KEY=VALUE of both runs (repeatable)")
    ap.add_argument("--out", default="runs/robust-twin")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "assets" / "robust-vs-standard.png"))
    ap.add_argument("--skip-existing", action="store_true", help="reuse finished runs in --out")
    args = ap.parse_args()
    cfg = RobustConfig(eps_warmup=0.2, ema=0.995, eval_every=100)
    apply_sets(cfg, args.set)
    keys = ["eps_warmup", "ema", "eval_every", *(s.partition("=")[0] for s in args.set)]
    options = {k: getattr(cfg, k) for k in keys}
    options.update(
        data=args.data, data_dir=args.data_dir, seed=args.seed, max_steps=args.steps, epochs=10_000
    )
    log = ResultLog("robust-twin")
    curves = {}
    for name, eps in (("PGD-trained", args.eps), ("standard twin", 0.0)):
        run = Path(args.out) / ("robust" if eps else "standard")
        wall = trained("robust", run, args.skip_existing, **{**options, "eps": eps})
        t0 = time.perf_counter()
        r = robustness(
            str(run),
            args.data_dir or args.data,
            ["autoattack"],
            args.curve,
            run / "autoattack",
            count=args.count,
            checkpoint="best",
            batch_size=args.aa_batch,
            seed=args.seed,
        )
        rows = [row for row in r["rows"] if row["attack"] == "autoattack"]
        curves[name] = [(0.0, r["clean_accuracy"])] + [(row["eps"], row["robust_accuracy"]) for row in rows]
        log.add(
            {
                "run": name,
                "train_eps": eps,
                "train_wall_s": wall,
                "clean_accuracy": r["clean_accuracy"],
                "robust_accuracy": {f"{row['eps']:g}": row["robust_accuracy"] for row in rows},
                "breakdown": {f"{row['eps']:g}": row.get("breakdown") for row in rows},
                "protocol": r["protocol"],
                "test_images": r["count"],
                "autoattack_s": round(time.perf_counter() - t0, 1),
                "warnings": r["warnings"],
                "options": {**options, "eps": eps},
            }
        )
    n = log.rows[-1]["test_images"]
    title = f"{args.data}, {args.steps} steps each\nAutoAttack standard (Linf), first {n} test images"
    plot(curves, title, Path(args.plot))
    log.write(plot=str(args.plot))


if __name__ == "__main__":
    main()
