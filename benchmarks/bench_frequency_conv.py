"""Direct (oneDNN) vs frequency-domain transposed convolution on CPU, side by side in one process.

    python benchmarks/bench_frequency_conv.py [--rounds 2] [--batches 64 128 256 512]

Times DCGAN's 256 -> 128, 5x5, stride-1 layer alone at batch 512 (forward + backward, fp32, then the
direct bf16 kernel for reference, and, with `--bf16-spectra`, a prototype that does every product of the
frequency path in bf16 — not used by gankit: its quality is unmeasured — with each output's error
against fp32) and the seed's whole generator (forward + backward) at each batch,
switching `GANKIT_FREQUENCY_CONV` between interleaved measurements (the rule that picks the path
applies unless the variable is "0", so "frequency" rows at batches the rule refuses time the direct
path too: their `path` column says which ran).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from gankit.device import keep_freed_host_memory
from gankit.nn.dcgan import SeedGenerator
from gankit.nn.layers import FREQUENCY_CONV_ENV, _dft_matrices, _frequency_domain_pays, _FrequencyProduct


def _bf16_spectra(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The frequency path with its inputs, DFT matrices and so every GEMM in bf16 (a prototype)."""
    n = x.shape[0]
    mats = [m.bfloat16() for m in _dft_matrices(7, 7, 5, 2)]
    pixels = x.bfloat16().permute(0, 2, 3, 1).reshape(n, 49, -1)
    return _FrequencyProduct.apply(pixels, weight.bfloat16(), *mats).view(n, 7, 7, -1).permute(0, 3, 1, 2)


def _ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up (allocations, DFT matrices)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--bf16-spectra", action="store_true", help="also time the bf16 prototype (layer rows)")
    args = ap.parse_args()
    keep_freed_host_memory()
    torch.manual_seed(0)
    cl = torch.channels_last
    gen = SeedGenerator().to(memory_format=cl)
    layer = gen.up1
    x = torch.randn(512, 256, 7, 7).contiguous(memory_format=cl).requires_grad_()
    g = torch.randn(512, 128, 7, 7).contiguous(memory_format=cl)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| what | batch | path | ms (forward + backward) |")
    print("| --- | ---: | --- | ---: |")
    with torch.no_grad():
        exact = torch.nn.functional.conv_transpose2d(x, layer.weight, None, 1, 2)
    modes = ("direct", "frequency", "direct bf16") + (
        ("frequency, bf16 spectra",) if args.bf16_spectra else ()
    )
    for r in range(args.rounds):
        for mode in modes:
            os.environ[FREQUENCY_CONV_ENV] = "1" if mode == "frequency" else "0"
            with torch.autocast("cpu", torch.bfloat16, enabled=mode == "direct bf16"):
                fn = (lambda: _bf16_spectra(x, layer.weight)) if "spectra" in mode else (lambda: layer(x))
                t = _ms(lambda fn=fn: torch.autograd.grad(fn().float(), [x, layer.weight], g))
                with torch.no_grad():
                    err = ((fn().float() - exact).norm() / exact.norm()).item()
            print(f"| layer, round {r} | 512 | {mode} (error {err:.1e}) | {t:.0f} |")
        for b in args.batches:
            z = torch.randn(b, 100)
            for mode in ("direct", "frequency"):
                os.environ[FREQUENCY_CONV_ENV] = "1" if mode == "frequency" else "0"
                ran = "frequency" if _frequency_domain_pays(layer, x[:b], [0, 0]) else "direct"
                t = _ms(lambda z=z: gen(z).square().mean().backward())
                print(f"| generator, round {r} | {b} | {ran} | {t:.0f} |")


if __name__ == "__main__":
    main()
