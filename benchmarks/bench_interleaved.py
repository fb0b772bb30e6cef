"""One CPU code path on and off, alternating every few training steps in one process.

    python benchmarks/bench_interleaved.py --recipe dcgan --batch-size 64 --toggle frequency-conv

For effects of a few percent on a shared VM whose speed drifts by more than that between processes
(bench_train.py runs each configuration in its own process): the recipe's real `train_step` on the
in-memory loader, in blocks of `--block` steps, the path switched between blocks (`--blocks` each way,
after a warm-up of both), reporting the median ms per step of each. Toggles:

- `frequency-conv`: the frequency-domain transposed convolution where this machine's measured crossover
  puts it (GANKIT_CPU_FREQUENCY_CONV unset) / never (off).
- `narrow-conv`: the narrow-convolution path (SSGAN's output layer) against the stock `nn.Conv2d`.

A new CPU path gets its toggle here (a function of the recipe and on/off) to be measured this way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_train import image_recipe
from common import ResultLog  # noqa: E402  (this folder)

from gankit.cpu.settings import env_name, refresh


def _path(name: str, on: bool) -> None:
    # on: as gankit runs unforced (its rule, with this machine's calibration); off: the stock layer
    if on:
        os.environ.pop(env_name(name), None)
    else:
        os.environ[env_name(name)] = "off"
    refresh()


def frequency_conv(recipe, on: bool) -> None:
    _path("frequency_conv", on)


def narrow_conv(recipe, on: bool) -> None:
    _path("narrow_conv", on)


TOGGLES = {"frequency-conv": frequency_conv, "narrow-conv": narrow_conv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="dcgan", choices=["dcgan", "ssgan"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--toggle", required=True, choices=sorted(TOGGLES))
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=8)
    args = ap.parse_args()
    from gankit.cpu import keep_freed_host_memory
    from gankit.recipes import get_recipe

    keep_freed_host_memory()
    torch.manual_seed(0)
    cls = get_recipe(args.recipe)
    cfg = cls.Config(precision=args.precision, batch_size=args.batch_size, device="cpu")
    r = image_recipe(args.recipe, cls, cfg, torch.device("cpu"), 4096)

    def stream():
        epoch = 0
        while True:
            yield from r.batches.epoch(epoch)
            epoch += 1

    feed, toggle, times = stream(), TOGGLES[args.toggle], {True: [], False: []}
    for i in range(2 * args.blocks + 2):
        on = i % 2 == 0
        toggle(r, on)
        t0 = time.perf_counter()
        for _ in range(args.block):
            out = r.train_step(next(feed))
        torch.stack(list(out.values())).tolist()
        if i >= 2:  # the first block of each: warm-up
            times[on].append(1000 * (time.perf_counter() - t0) / args.block)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    log = ResultLog("bench-interleaved")
    log.add(
        {
            "recipe": args.recipe,
            "batch": args.batch_size,
            "precision": args.precision,
            "toggle": args.toggle,
            "on_ms": round(on, 2),
            "off_ms": round(off, 2),
            "off_over_on": round(off / on, 4),
        },
        echo=False,
    )
    log.write()
    print(
        f"{args.recipe} batch {args.batch_size} {args.precision}, {args.toggle}: on {on:.1f} ms/step "
        f"(blocks {min(times[True]):.1f}-{max(times[True]):.1f}), off {off:.1f} "
        f"({min(times[False]):.1f}-{max(times[False]):.1f}); off/on {off / on:.3f}, "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
