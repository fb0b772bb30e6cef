"""Augmentation on small data: DCGAN or SNGAN on 1,000 and 5,000 Fashion-MNIST training images,
without augmentation, with DiffAugment policies and with adaptive augmentation (ADA).

    python benchmarks/small_data.py --data-dir /usr/share/datasets/fashion-mnist \
        --sizes 1000 5000 --steps 3000 --extractor PATH/TO/default_1.pt
    python benchmarks/small_data.py --recipe sngan --set ngf=64 ndf=64 --sizes 1000 \
        --policies none translation ada:0.6 --steps 6000 --curve-fid --extractor PATH/TO/default_1.pt

Protocol. A fixed random permutation (seed 0) of the 60,000 training images: the first N form the
training subset, the last 1,000 a held-out real set that no run trains on. Every run: the recipe's
28 px networks (DCGAN: the seed's; --image-size 64: the DCGAN paper's, on images resized to 64 px;
SNGAN: its ResNets, hinge loss, Adam 2e-4 / 0.0 / 0.9, one step = one discriminator step), batch 64,
DCGAN Adam 2e-4 / beta1 0.5, generator EMA 0.999, the same seed and the same number of steps; only
the augmentation differs: none, a DiffAugment policy (e.g. color,translation,cutout) or `ada:T`
(adaptive augmentation with target T for r_t). Every --chunk steps the run stops and
resumes (exactly: see the resume tests), and the discriminator (eval mode) is scored on 1,000 of its
training images, on the 1,000 held-out images and on 1,000 fresh fakes: mean sigmoid(D(x)) (for a
hinge discriminator a monotone squashing of its score). Overfitting shows as D(train) pulling away
from D(held-out). The policies advance a chunk each in turn and each run records its curve in its
folder, so a stopped script continues with the same command (--no-test for a stage of a longer run:
validation only). Selection: each run's validation FID, 1,000 EMA samples (seed 0) against the 1,000
held-out training images, picks the best DiffAugment policy and the best ADA target per size; the test
set is then read for `none` and those only. At the end: FID of 10,000 EMA samples (seed 0) against
the 10,000 test images (standard protocol: Inception pool3, 299 px, fp32 features).
Writes JSON + Markdown to benchmarks/results/ and the figure docs/assets/small_data.png (small_data_64px.png
for --image-size 64, small_data_sngan.png for SNGAN; --figure elsewhere).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

import torch

import gankit
from gankit import api
from gankit.data import load_dataset
from gankit.data.transforms import to_tanh_range
from gankit.io import write_json_atomic
from gankit.metrics.quality import RealSet, evaluate_samples, to_uint8

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_result  # noqa: E402

DEFAULT_POLICIES = ["none", "color,translation,cutout"]


def policy_options(policy: str) -> dict:
    """Training options of one augmentation policy: `none`, a DiffAugment policy or `ada:TARGET`."""
    if policy.startswith("ada:"):
        return {"ada": float(policy[4:]), "diffaugment": "none"}
    return {"diffaugment": policy}


def family(policy: str) -> str:
    """none, diffaugment or ada: the policies among which validation picks one each."""
    return "none" if policy == "none" else "ada" if policy.startswith("ada:") else "diffaugment"


def parse_sets(pairs: list[str]) -> dict:
    """--set key=value recipe options, values read as JSON where they parse (numbers), else strings."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def write_idx(path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """IDX files (the MNIST format) of uint8 (N, 1, 28, 28) images and their labels."""
    path.mkdir(parents=True, exist_ok=True)
    x = images[:, 0].contiguous().numpy()
    (path / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, *x.shape) + x.tobytes())
    y = labels.to(torch.uint8).numpy()
    (path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y)) + y.tobytes())


@torch.no_grad()
def d_scores(run: Path, train_real: torch.Tensor, held_out: torch.Tensor) -> dict:
    """Mean sigmoid(D) of the run's discriminator (eval mode) on training, held-out and fake images."""
    r = api.load_recipe(run)
    d, g = r.discriminator.eval(), r.generator.eval()
    z = torch.randn(len(held_out), r.cfg.latent_dim, generator=torch.Generator().manual_seed(1))

    def mean_d(x):
        return torch.sigmoid(d(x).float()).mean().item()

    return {
        "d_train_real": round(mean_d(to_tanh_range(train_real)), 4),
        "d_held_out_real": round(mean_d(to_tanh_range(held_out)), 4),
        "d_fake": round(mean_d(g(z)), 4),
    }


def stored_step(run: Path) -> int:
    """The step of a run's latest checkpoint (0: no run there yet)."""
    steps = [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.safetensors")]
    return max(steps, default=0)


CURVE = "small-data-curve.json"


def read_curve(run: Path) -> list[dict]:
    """The curve points a run of this script recorded in its folder (none: an empty list)."""
    path = run / CURVE
    return json.loads(path.read_text()) if path.is_file() else []


def validation_fid(run: Path, held: RealSet, extractor: str | None) -> float:
    """FID of 1,000 EMA samples (seed 0) against the 1,000 held-out training images."""
    fake = to_uint8(api.load_recipe(run).sample(1000, seed=0))
    return round(evaluate_samples(fake, held, extractor, "fp32", progress=False)["metrics"]["fid"], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--recipe", default="dcgan", choices=["dcgan", "sngan"])
    ap.add_argument("--set", nargs="*", default=[], help="recipe options, e.g. ngf=64 ndf=64 n_dis=2")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument(
        "--policies", nargs="+", default=DEFAULT_POLICIES, help="none and DiffAugment policies to compare"
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=28,
        choices=[28, 64],
        help="28: the seed's networks; 64: the DCGAN paper's (batch-norm discriminator, no dropout)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--extractor", default=None)
    ap.add_argument("--out", default="runs/small-data")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument(
        "--curve-fid", action="store_true", help="validation FID at every --chunk too (~45 s each on 2 cores)"
    )
    ap.add_argument(
        "--continue-from",
        default=None,
        help="an earlier results JSON whose runs (still under --out) this one continues to --steps: "
        "their curves are kept, the runs resumed",
    )
    ap.add_argument(
        "--no-test",
        action="store_true",
        help="stop at the validation curves (a run to be continued): the test set is read once, at the end",
    )
    ap.add_argument(
        "--figure",
        default=None,
        help="where the figure goes (default docs/assets/small_data.png; small_data_64px.png at 64 px)",
    )
    args = ap.parse_args()
    earlier = {}
    if args.continue_from:
        for row in json.loads(Path(args.continue_from).read_text())["rows"]:
            curve = row["curve"]
            if curve and "validation_fid" not in curve[-1]:  # its final validation FID
                curve[-1]["validation_fid"] = row["validation_fid"]
            earlier[(row["images"], row["diffaugment"])] = curve
    if args.recipe != "dcgan" and args.image_size != 28:
        raise SystemExit(f"--image-size {args.image_size}: the {args.recipe} comparison runs at 28 px")

    train = load_dataset("fashion-mnist", "train", args.data_dir)
    perm = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))
    # the run's resolution: the discriminator is scored and FID measured against real images resized
    # the way the recipe resizes them (the training folder itself holds the 28 px originals)
    sized = (
        train
        if args.image_size == 28
        else load_dataset("fashion-mnist", "train", args.data_dir, args.image_size)
    )
    held_out = sized.images[perm[-1000:]]
    out = Path(args.out)
    rows = []
    for n in args.sizes:
        subset = perm[:n]
        folder = out / f"data-{n}"
        if not folder.is_dir():
            write_idx(folder, train.images[subset], train.labels[subset])
        scored_train = sized.images[subset[:1000]]
        held = RealSet(held_out, "fashion-mnist:train-held-out", "validation")
        size_tag = "" if args.image_size == 28 else f"-{args.image_size}px"
        runs = {
            p: out / f"{args.recipe}-{n}{size_tag}-{p.replace(',', '+').replace(':', '')}"
            for p in args.policies
        }
        opts = dict(
            data=str(folder),
            epochs=100_000,  # the length is --steps (max_steps), whatever the subset size
            image_size=args.image_size,
            batch_size=64,
            **(dict(lr=2e-4, beta1=0.5) if args.recipe == "dcgan" else {}),
            ema=0.999,
            seed=args.seed,
            preview_every=1000,
            checkpoint_every=args.chunk,
            log_every=50,
            **parse_sets(args.set),
        )
        curves, train_s = {}, dict.fromkeys(args.policies, 0.0)
        for policy, run in runs.items():
            done = stored_step(run)
            kept = read_curve(run) or earlier.get((n, policy), [])
            curves[policy] = [c for c in kept if c["step"] <= done]
        # the policies advance a chunk each in turn: a run stopped at any point leaves them at the same
        # step (or one chunk apart), and the same command continues them
        for stop in range(args.chunk, args.steps + 1, args.chunk):
            for policy, run in runs.items():
                done = stored_step(run)
                if stop <= done:
                    continue  # a longer run continues a stored one (resume is exact: tests/test_resume*)
                t0 = time.perf_counter()
                if done == 0:
                    gankit.train(
                        args.recipe,
                        progress=False,
                        out=str(run),
                        max_steps=stop,
                        **policy_options(policy),
                        **opts,
                    )
                else:
                    gankit.resume(run, progress=False, max_steps=stop)
                train_s[policy] += time.perf_counter() - t0
                point = {"step": stop, **d_scores(run, scored_train, held_out)}
                if args.curve_fid:
                    point["validation_fid"] = validation_fid(run, held, args.extractor)
                curves[policy].append(point)
                write_json_atomic(run / CURVE, curves[policy])  # a killed script leaves the last one
                print(json.dumps({"run": run.name, **point}), flush=True)
        candidates = []
        for policy, run in runs.items():
            curve = curves[policy]
            if not curve:  # nothing trained here and nothing recorded for the stored steps
                raise SystemExit(
                    f"{run}: already trained to step {stored_step(run)} (--steps {args.steps}) with no "
                    f"{CURVE} there; pass --continue-from the results JSON that recorded it, "
                    "or a larger --steps"
                )
            val_fid = curve[-1].get("validation_fid") or validation_fid(run, held, args.extractor)
            candidates.append(
                {
                    "images": n,
                    "recipe": args.recipe,
                    "image_size": args.image_size,
                    "diffaugment": policy,
                    "steps": curve[-1]["step"],
                    "train_s": round(train_s[policy], 1),
                    "validation_fid": val_fid,
                    "curve": curve,
                    "auto_precision": json.loads((run / "config.json").read_text())["auto_precision"],
                    "run": run,
                }
            )
            print(json.dumps({"run": run.name, "validation_fid": val_fid}), flush=True)
        chosen = []  # the best of each augmentation family on validation, and `none`
        for kind in ("none", "diffaugment", "ada"):
            members = [c for c in candidates if family(c["diffaugment"]) == kind]
            if members:
                chosen.append(min(members, key=lambda c: c["validation_fid"]))
        for c in candidates:
            c["selected"] = any(c is k for k in chosen)
            if not c["selected"] or args.no_test:
                rows.append({k: v for k, v in c.items() if k != "run"})
                continue
            test = load_dataset("fashion-mnist", "test", args.data_dir, args.image_size)
            real = RealSet(test.images, "fashion-mnist:test", "test")
            fake = to_uint8(api.load_recipe(c["run"]).sample(args.num_samples, seed=0))
            report = evaluate_samples(fake, real, args.extractor, "fp32", progress=False)
            row = {k: v for k, v in c.items() if k != "run"}
            row.update({m: report["metrics"][m] for m in ("fid", "kid", "precision", "recall")})
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)

    result = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "protocol": __doc__.split("Protocol.")[1].split("Writes")[0].split(),
        "rows": rows,
        "test_read": not args.no_test,
    }
    write_result(Path(args.results), "small-data", result, markdown)
    default = (
        f"docs/assets/small_data_{args.recipe}.png"
        if args.recipe != "dcgan"
        else "docs/assets/small_data.png"
        if args.image_size == 28
        else f"docs/assets/small_data_{args.image_size}px.png"
    )
    plot(rows, Path(args.figure or default))


def markdown(result: dict, stamp: str) -> str:
    """The result file's table, from the JSON alone (benchmarks/render_results.py renders it too)."""
    rows = result["rows"]
    lines = [
        f"# Augmentation on small data ({result['machine']['cpu']}, {stamp})",
        "",
        f"`{result['command']}`",
        "",
        "| recipe | train images | size | augmentation | steps | validation FID (1k vs held-out 1k) "
        "| FID (10k vs test 10k) | KID x1e3 | precision | recall "
        "| D(train) - D(held-out) at end | D(fake) at end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:  # files written before a column existed leave it empty
        end = r["curve"][-1] if r.get("curve") else {}
        gap = f"{end['d_train_real'] - end['d_held_out_real']:+.3f}" if "d_held_out_real" in end else ""
        d_fake = f"{end['d_fake']:.3f}" if "d_fake" in end else ""
        test = (
            f"{r['fid']:.2f} | {r['kid'] * 1000:.2f} | {r['precision']:.3f} | {r['recall']:.3f}"
            if "fid" in r
            else f"{'not read' if result.get('test_read') is False else 'not selected'} | | |"
        )
        val = f"{r['validation_fid']:.2f}" if "validation_fid" in r else ""
        lines.append(
            f"| {r.get('recipe', 'dcgan')} | {r['images']} | {r.get('image_size', 28)} px "
            f"| {r['diffaugment']} | {r['steps']} | {val} | {test} | {gap} | {d_fake} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fids = any("validation_fid" in c for r in rows for c in r["curve"])
    fig, axes = plt.subplots(1, 3 if fids else 2, figsize=(13 if fids else 9, 3.2), dpi=80)
    for r in rows:
        steps = [c["step"] for c in r["curve"]]
        style = "-" if r["diffaugment"] != "none" else "--"
        kind = r["diffaugment"] if r["diffaugment"] != "none" else "plain"
        score = f"FID {r['fid']:.1f}" if "fid" in r else f"val FID {r['validation_fid']:.1f}"
        label = (
            f"{r.get('recipe', 'dcgan')}, {r['images']} imgs, {r.get('image_size', 28)} px, {kind}: {score}"
        )
        axes[0].plot(
            steps, [c["d_train_real"] - c["d_held_out_real"] for c in r["curve"]], style, label=label
        )
        axes[1].plot(steps, [c["d_train_real"] - c["d_fake"] for c in r["curve"]], style, label=label)
        if fids:
            points = [(c["step"], c["validation_fid"]) for c in r["curve"] if "validation_fid" in c]
            axes[2].plot(*zip(*points), style + "o", markersize=3, label=label)
    axes[0].set_title("D(train real) - D(held-out real)")
    if fids:
        axes[2].set_title("validation FID (1k vs held-out 1k)")
    axes[1].set_title("D(train real) - D(fake)")
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
