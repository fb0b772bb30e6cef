"""Attack throughput (attacked images per second) and peak memory, gankit vs torchattacks.

Both attack EfficientNet-Lite0 (pretrained, 224 px) wrapped by gankit's ImageClassifier (normalisation
inside), with the same eps/alpha/steps: gankit with the wrapper's defaults (channels-last), torchattacks
with the model as a user hands it over (NCHW), which is what each library does with a user's model.
torchattacks is optional and needs no torchvision for these attacks:
pip install --no-deps --target /tmp/ta torchattacks, then
PYTHONPATH=/tmp/ta python benchmarks/bench_attacks.py. Each configuration runs in its own process.

    python benchmarks/bench_attacks.py --attack fgsm pgd apgd --batch-size 1 32 --json

APGD runs 10 steps here (APGD-CE, one restart), as PGD does, so the two compare step for step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_train import peak_memory
from common import ResultLog, run_isolated  # noqa: E402  (this folder)


def measure(impl: str, attack: str, batch_size: int, repeats: int, device: str) -> dict:
    from gankit.attacks import APGD, FGSM, PGD, load_classifier
    from gankit.device import pick_device

    dev = pick_device(device)
    model = load_classifier("efficientnet-lite0").to(dev).eval()
    if impl == "torchattacks":
        # what a torchattacks user runs: the same weights and normalisation, the model as it comes
        # (NCHW); gankit's wrapper runs it channels-last by default.
        model.model.to(memory_format=torch.contiguous_format)
        model.channels_last = False
    x = torch.rand(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, alpha, steps = 4 / 255, 1 / 255, 10
    if impl == "gankit":
        atk = {
            "fgsm": lambda: FGSM(model, eps),
            "pgd": lambda: PGD(model, eps, alpha=alpha, steps=steps),
            "apgd": lambda: APGD(model, eps, steps=steps, loss="ce"),
        }[attack]()
    else:
        import torchattacks

        atk = {
            "fgsm": lambda: torchattacks.FGSM(model, eps=eps),
            "pgd": lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True),
            "apgd": lambda: torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="ce"),
        }[attack]()
    run = lambda: atk(x, y)  # noqa: E731
    run()  # warm-up
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        adv = run()
    sync()
    dt = time.perf_counter() - t0
    assert (adv - x).abs().max() <= eps + 1e-6
    peak, kind = peak_memory(dev)
    return {
        "impl": impl,
        "attack": attack if attack == "fgsm" else f"{attack}-{steps}",
        "batch_size": batch_size,
        "device": str(dev),
        "images_per_s": round(batch_size * repeats / dt, 2),
        "seconds_per_batch": round(dt / repeats, 4),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": kind,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attack", nargs="+", default=["fgsm", "pgd"], choices=["fgsm", "pgd", "apgd"])
    ap.add_argument("--batch-size", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--impl", nargs="+", default=["gankit", "torchattacks"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(
            json.dumps(measure(args.impl[0], args.attack[0], args.batch_size[0], args.repeats, args.device))
        )
        return
    log = ResultLog("bench-attacks")
    for attack in args.attack:
        for bs in args.batch_size:
            for impl in args.impl:
                repeats = args.repeats if bs > 1 else 10 * args.repeats
                argv = ["--impl", impl, "--attack", attack, "--batch-size", str(bs)]
                argv += ["--repeats", str(repeats), "--device", args.device]
                r = run_isolated(__file__, argv, f"{impl} {attack} batch {bs}")
                if r is None:
                    continue
                log.add(r, echo=False)
                print(
                    json.dumps(r)
                    if args.json
                    else f"{r['impl']:12s} {r['attack']:6s} batch {bs:3d} {r['images_per_s']:8.2f} img/s  "
                    f"peak {r['peak_memory_mb']:.0f} MB on {r['device']}",
                    flush=True,
                )
    log.write()


if __name__ == "__main__":
    main()
