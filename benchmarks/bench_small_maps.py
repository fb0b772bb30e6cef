"""The small-map GEMM path of gankit's Conv2d / ConvTranspose2d against the layer's other CPU path
(oneDNN, or the GEMM weight gradient where that applies), forward + both gradients, fp32, channels-last,
alternating. The U-Net's inner 512-channel layers and DCGAN's 7 px
layers, at the batches where `gankit.cpu.small_map`'s rules were drawn.

    python benchmarks/bench_small_maps.py [--rounds 3]
"""

import argparse
import os

import torch
import torch.nn as nn
from common import ResultLog, timed  # this folder

import gankit.cpu.small_map as L
from gankit.cpu import keep_freed_host_memory, prepare
from gankit.cpu.settings import env_name, refresh

CL = torch.channels_last
# (name, layer factory, input channels, map size, batches)
CASES = [
    ("512 -> 512 conv", lambda: nn.Conv2d(512, 512, 4, 2, 1), 512, 8, (1, 3, 4, 6, 8, 16)),
    ("512 -> 512 conv", lambda: nn.Conv2d(512, 512, 4, 2, 1), 512, 16, (1, 2)),
    ("512 -> 512 conv", lambda: nn.Conv2d(512, 512, 4, 2, 1), 512, 4, (8, 16, 32)),
    ("512 -> 512 conv", lambda: nn.Conv2d(512, 512, 4, 2, 1), 512, 2, (32, 64, 128)),
    ("1024 -> 512 transposed", lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), 1024, 8, (1, 3, 4, 6)),
    ("1024 -> 512 transposed", lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), 1024, 16, (1, 2)),
    ("1024 -> 512 transposed", lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), 1024, 4, (8, 16)),
    ("1024 -> 512 transposed", lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), 1024, 2, (32, 64)),
    (
        "DCGAN 128 -> 64, 5x5 transposed",
        lambda: nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1, bias=False),
        128,
        7,
        (4, 8),
    ),
    (
        "DCGAN 256 -> 128, 5x5 s1 transposed",
        lambda: nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False),
        256,
        7,
        (4, 8),
    ),
]
RULES = ("SMALL_MAP_PIXELS", "SMALL_MAP_WIDE_PIXELS", "SMALL_MAP_IMAGE_PIXELS", "SMALL_MAP_WIDE_WEIGHTS")


def force(gemm: bool) -> None:
    """Every map onto the GEMM path (gemm) or none."""
    big = 10**9
    for name, value in zip(RULES, (big, big, big, 0) if gemm else (0, 0, 0, big)):
        setattr(L, name, value)
    os.environ[env_name("small_map_wide")] = "on" if gemm else "off"
    refresh()


def layer_ms(layer, c, n, size, reps):
    """Mean ms of forward + backward (input and weight gradients) after two warm-up calls."""
    x = torch.randn(n, c, size, size).contiguous(memory_format=CL).requires_grad_()

    def f():
        y = layer(x)
        y.backward(torch.ones_like(y))

    return timed(f, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    keep_freed_host_memory()
    os.environ.setdefault(env_name("frequency_conv"), "off")  # DCGAN's stride-1 layer: the direct kernel
    torch.manual_seed(0)
    print(f"{'layer':38s} {'px':>3s} {'batch':>5s} {'GEMM ms':>16s} {'other ms':>16s}")
    log = ResultLog("bench-small-maps")
    for name, make, c, size, batches in CASES:
        layer = prepare(make())
        for n in batches:
            ms = {True: [], False: []}
            for _ in range(args.rounds):
                for gemm in (True, False):
                    force(gemm)
                    ms[gemm].append(layer_ms(layer, c, n, size, args.reps))
            lo_hi = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in ms.items()}
            print(f"{name:38s} {size:3d} {n:5d} {lo_hi[True]:>16s} {lo_hi[False]:>16s}", flush=True)
            log.add(
                {"layer": name, "px": size, "batch": n, "gemm_ms": ms[True], "other_ms": ms[False]},
                echo=False,
            )
    log.write()


if __name__ == "__main__":
    main()
