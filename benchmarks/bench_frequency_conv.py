"""Direct (oneDNN) vs frequency-domain transposed convolution on CPU, side by side in one process.

    python benchmarks/bench_frequency_conv.py [--rounds 2] [--batches 64 128 256 512] [--precisions fp32 bf16]

Times DCGAN's 256 -> 128, 5x5, stride-1 layer alone at batch 512 (forward + backward, in fp32 and
under bf16 autocast, each direct and in the frequency domain, with each output's error against fp32)
and the seed's whole generator (forward + backward) at each batch and precision, switching
`GANKIT_CPU_FREQUENCY_CONV` between interleaved measurements (the rule that picks the path applies unless
the variable is "0", so "frequency" rows at batches the rule refuses time the direct path too: their
`path` column says which ran).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import ResultLog  # noqa: E402  (this folder)

from gankit.cpu import frequency, keep_freed_host_memory, prepare
from gankit.cpu.settings import env_name, refresh
from gankit.nn.dcgan import SeedGenerator


def _ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up (allocations, DFT matrices)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def forward(net: torch.nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """net(x) as fp32, its forward under bf16 autocast for "bf16" (the backward outside, as in training)."""
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        return net(x).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = ap.parse_args()
    keep_freed_host_memory()
    torch.manual_seed(0)
    cl = torch.channels_last
    gen = prepare(SeedGenerator())
    layer = gen.up1
    x = torch.randn(512, 256, 7, 7).contiguous(memory_format=cl).requires_grad_()
    g = torch.randn(512, 128, 7, 7).contiguous(memory_format=cl)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| what | batch | precision | path | ms (forward + backward) |")
    print("| --- | ---: | --- | --- | ---: |")
    with torch.no_grad():
        exact = torch.nn.functional.conv_transpose2d(x, layer.weight, None, 1, 2)
    log = ResultLog("bench-frequency-conv")
    for r in range(args.rounds):
        for precision in args.precisions:
            for mode in ("direct", "frequency"):
                os.environ[env_name("frequency_conv")] = "on" if mode == "frequency" else "off"
                refresh()
                t = _ms(lambda p=precision: torch.autograd.grad(forward(layer, x, p), [x, layer.weight], g))
                with torch.no_grad():
                    err = ((forward(layer, x, precision) - exact).norm() / exact.norm()).item()
                print(f"| layer, round {r} | 512 | {precision} | {mode} (error {err:.1e}) | {t:.0f} |")
                row = {"what": "layer", "round": r, "batch": 512, "precision": precision, "path": mode}
                log.add({**row, "relative_error": err, "ms": round(t, 2)}, echo=False)
        for b in args.batches:
            z = torch.randn(b, 100)
            for precision in args.precisions:
                for mode in ("direct", "frequency"):
                    os.environ[env_name("frequency_conv")] = "on" if mode == "frequency" else "off"
                    refresh()
                    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
                    on = mode == "frequency" and frequency.applies(layer, x[:b], dtype)
                    ran = "frequency" if on else "direct"
                    t = _ms(lambda z=z, p=precision: forward(gen, z, p).square().mean().backward())
                    print(f"| generator, round {r} | {b} | {precision} | {ran} | {t:.0f} |")
                    row = {"what": "generator", "round": r, "batch": b, "precision": precision, "path": ran}
                    log.add({**row, "ms": round(t, 2)}, echo=False)
    log.write()


if __name__ == "__main__":
    main()
