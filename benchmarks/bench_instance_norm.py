"""Per-image instance norm on CPU, forward + backward, three ways (benchmarks/README.md, session 20).

`slices`: F.batch_norm per `x[i : i + 1]` (gankit before session 20), `split`: per `x.split(1)` (now;
at batch 1 gankit calls F.batch_norm on x directly, `direct`), `stock`: torch's F.instance_norm.
Channels-last fp32, summed over map sizes of the U-Net's normalised layers.

    python benchmarks/bench_instance_norm.py
"""

import time

import torch
import torch.nn.functional as F

from gankit.device import keep_freed_host_memory


def timed(f, n=10):
    """Mean ms of n calls after two warm-up calls."""
    f()
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1000


def slices(x, w, b):
    return torch.cat([F.batch_norm(x[i : i + 1], None, None, w, b, True, 0.0, 1e-5) for i in range(len(x))])


def split(x, w, b):
    return torch.cat([F.batch_norm(p, None, None, w, b, True, 0.0, 1e-5) for p in x.split(1)])


def stock(x, w, b):
    return F.instance_norm(x, weight=w, bias=b, eps=1e-5)


def direct(x, w, b):
    return F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)


def run(batch, sizes, ways):
    totals = dict.fromkeys((f.__name__ for f in ways), 0.0)
    for c, s in sizes:
        x = torch.randn(batch, c, s, s).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(c, requires_grad=True)
        b = torch.randn(c, requires_grad=True)
        gy = torch.randn_like(x)
        row = []
        for f in ways:

            def step(f=f, x=x, w=w, b=b, gy=gy):
                x.grad = w.grad = b.grad = None
                f(x, w, b).backward(gy)

            t = timed(step)
            row.append(f"{f.__name__} {t:.2f}")
            totals[f.__name__] += t
        print(f"batch {batch}, {c} channels, {s} px: " + ", ".join(row) + " ms")
    print(f"batch {batch}, total ms: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))


if __name__ == "__main__":
    keep_freed_host_memory()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    maps = [(128, 64), (256, 32), (512, 16), (512, 8), (512, 32), (256, 64), (128, 128), (64, 128)]
    for n in (2, 3):
        run(n, maps, (slices, split, stock))
    run(1, [(128, 64), (256, 32), (512, 32), (256, 64), (128, 128), (64, 128)], (slices, split, direct))
