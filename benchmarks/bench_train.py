"""Training throughput and peak memory per recipe and batch size.

Runs the recipe's real `train_step` (the code `gankit train` runs), fed either by a fixed synthetic
batch (`synthetic`: the step alone) or by the in-memory loader over random uint8 images (`memory`:
step + batch gathering). Each configuration runs in its own process so that peak memory is its own.

    python benchmarks/bench_train.py --recipe dcgan --batch-size 64 512 --json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import torch
from common import ResultLog  # noqa: E402  (this folder)
from torch.utils._python_dispatch import TorchDispatchMode


def apply_sets(cfg, sets: list[str]) -> None:
    """--set KEY=VALUE config overrides (e.g. generator=resnet), typed like the field's default."""
    for item in sets:
        key, _, value = item.partition("=")
        old = getattr(cfg, key)
        if isinstance(old, bool):
            value = value.lower() in ("1", "true", "yes", "on")
        elif old is not None and not isinstance(old, str):
            value = type(old)(value)
        elif old is None and value.lstrip("-").isdigit():
            value = int(value)  # an optional integer (e.g. image_size)
        setattr(cfg, key, value)


def measure(
    recipe: str,
    batch_size: int,
    loader: str,
    precision: str,
    steps: int,
    warmup: int,
    device: str,
    sets: list[str] = (),
    around=None,
    compile_mode: str | None = None,
):
    """Images/s of `steps` training steps after `warmup`; `around`: a context manager entered for the
    timed steps only (run_all.py profiles them with it); `compile_mode`: the networks the step calls
    are wrapped in torch.compile(mode=compile_mode) first (compilation happens in the warm-up)."""
    from gankit.cpu import keep_freed_host_memory
    from gankit.device import pick_device
    from gankit.recipes import get_recipe

    torch.manual_seed(0)
    dev = pick_device(device)
    if dev.type == "cpu":  # as gankit train does (Trainer.fit)
        keep_freed_host_memory()
    cls = get_recipe(recipe)
    cfg = cls.Config(precision=precision, batch_size=batch_size, device=device)
    apply_sets(cfg, sets)
    if recipe in ("pix2pix", "cyclegan"):
        return measure_translation(cls, cfg, dev, steps, warmup, loader, around, compile_mode)
    r = image_recipe(recipe, cls, cfg, dev, max(batch_size * (steps + warmup), 4096), compile_mode)
    if loader == "synthetic":
        fixed = next(r.batches.epoch(0))
        batches = iter(lambda: fixed, None)
    else:
        batches = r.batches.epoch(0)
    dt = time_steps(lambda _: r.train_step(next(batches)), warmup, steps, dev, around)
    return _result(cfg, dev, loader, batch_size, steps, dt, None, compile_mode=compile_mode)


def image_recipe(name: str, cls, cfg, dev: torch.device, n_images: int, compile_mode: str | None = None):
    """An image-generation recipe (dcgan, cdcgan, ssgan; 28 px, 1 channel unless `cfg` says otherwise)
    built as `gankit train` builds it, with `batches` the in-memory loader over `n_images` random uint8
    images (SSGAN: the first 1,000 labelled; class-conditional recipes: every image, 10 classes)."""
    from gankit.data.batches import InMemoryBatches, SemiSupervisedBatches

    cfg.image_size, cfg.channels = cfg.image_size or 28, cfg.channels or 1
    labelled = cls.data_format == "labelled"
    if labelled:
        cfg.num_classes, cfg.class_names = 10, [str(i) for i in range(10)]
    r = compiled(cls(cfg, dev), compile_mode)
    shape = (n_images, cfg.channels, cfg.image_size, cfg.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    if name == "ssgan":
        labels = torch.randint(0, 10, (1000,))
        r.batches = SemiSupervisedBatches(images[:1000], labels, images, cfg.batch_size // 2, 0, dev)
    else:
        labels = torch.randint(0, 10, (n_images,)) if labelled else None
        r.batches = InMemoryBatches(images, cfg.batch_size, 0, dev, labels=labels)
    return r


def compiled(r, mode: str | None):
    """The recipe with each network its step calls (the EMA copy aside) replaced by
    torch.compile(network, mode=mode); parameters, optimisers and checkpoints are untouched."""
    if mode is None:
        return r
    # The GAN steps run two backward passes through one forward graph (retain_graph=True), which
    # AOTAutograd's donated buffers refuse.
    torch._functorch.config.donated_buffer = False
    trained = {id(m) for name, m in r.modules.items() if not name.startswith("ema")}
    for attr, value in list(vars(r).items()):
        if id(value) in trained:
            setattr(r, attr, torch.compile(value, mode=None if mode == "default" else mode))
    return r


def time_steps(step, warmup: int, steps: int, dev: torch.device, around=None) -> float:
    """Seconds taken by `steps` calls of step(i) after `warmup` untimed ones, the last one waited for;
    `around` (a context manager factory) is entered for the timed calls only."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(warmup):
        step(i)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with around() if around else contextlib.nullcontext():
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            out = step(i)
        torch.stack(list(out.values())).tolist()  # wait for the last step
        sync()
        return time.perf_counter() - t0


class OperatorTimer(TorchDispatchMode):
    """Wall seconds per aten operator (`seconds["aten::mm"]`, ...) of the code run under it, backward
    passes included, each operator timed around its own call (nested calls are inside their caller's
    time, not counted again). On these CPUs torch.profiler made memory-bound operators look several
    times slower than they run: a copy it gave 23-43 ms took 2.5-3.1 ms in the step.
    With CUDA each operator is waited for (slower, but each kernel's own time)."""

    def __init__(self):
        super().__init__()
        self.seconds: collections.Counter = collections.Counter()
        self._sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self._sync()
        self.seconds[f"aten::{func.overloadpacket.__name__}"] += time.perf_counter() - t0
        return out


def peak_memory(dev: torch.device) -> tuple[int, str]:
    """(bytes, what they measure): CUDA's peak allocation, else the process's peak resident set."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(), "cuda allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS"


def _result(cfg, dev, loader, batch_size, steps, dt, precision_name, variant=None, compile_mode=None):
    from gankit.cpu import memory_format
    from gankit.device import autocast_dtype

    peak, kind = peak_memory(dev)
    return {
        "recipe": cfg.recipe + (f" ({variant})" if variant else ""),
        "batch_size": batch_size,
        "loader": loader,
        "device": str(dev),
        "precision": precision_name or ("bf16" if autocast_dtype(cfg.precision, dev) else "fp32"),
        "images_per_s": float(f"{batch_size * steps / dt:.4g}"),  # 4 digits: 0.44 img/s is not +-1%
        "step_ms": round(1000 * dt / steps, 2),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": kind,
        "threads": torch.get_num_threads(),
        "memory_format": "channels_last" if memory_format() == torch.channels_last else "contiguous",
        "compile": compile_mode,
    }


def measure_translation(r_cls, cfg, dev, steps, warmup, loader, around=None, compile_mode=None):
    """pix2pix / cyclegan at 256x256 from uint8 pairs stored at the 286 px load size (as `gankit train`
    keeps them), jitter included. `loader=reference` times the reference PyTorch code's pix2pix step
    instead: D on the detached fake, then G through a fresh D pass, fp32, NCHW, same networks."""
    cfg.in_channels = cfg.out_channels = 3
    if hasattr(cfg, "channels_a"):
        cfg.channels_a = cfg.channels_b = 3
    r = compiled(r_cls(cfg, dev), compile_mode)
    n = cfg.batch_size * 4
    a = torch.randint(0, 256, (n, 3, 286, 286), dtype=torch.uint8, device=dev)
    b = torch.randint(0, 256, (n, 3, 286, 286), dtype=torch.uint8, device=dev)

    def batch(i):
        k = (i % 4) * cfg.batch_size
        return a[k : k + cfg.batch_size], b[k : k + cfg.batch_size]

    step = r.train_step if loader != "reference" else reference_pix2pix_step(r)
    dt = time_steps(lambda i: step(batch(i)), warmup, steps, dev, around)
    variant = "reference step" if loader == "reference" else None
    if getattr(cfg, "generator", None):
        variant = variant or cfg.generator
    return _result(
        cfg,
        dev,
        loader,
        cfg.batch_size,
        steps,
        dt,
        "fp32" if loader == "reference" else None,
        variant,
        compile_mode=compile_mode,
    )


def reference_pix2pix_step(r):
    """junyanz/pytorch-CycleGAN-and-pix2pix `Pix2PixModel.optimize_parameters`, re-typed on our nets."""
    import torch.nn.functional as F

    from gankit.data.pairs import paired_jitter
    from gankit.data.transforms import to_tanh_range

    g = r.generator.to(memory_format=torch.contiguous_format)
    d = r.discriminator.to(memory_format=torch.contiguous_format)
    # the reference code's optimisers: torch's default (foreach) Adam, not gankit's fused one
    og = torch.optim.Adam(g.parameters(), r.cfg.lr, (r.cfg.beta1, 0.999))
    od = torch.optim.Adam(d.parameters(), r.cfg.lr, (r.cfg.beta1, 0.999))

    def bce(x, real):
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(real)))

    def step(batch):
        a, b = paired_jitter(*batch, 286, 256, True)
        x, y = to_tanh_range(a), to_tanh_range(b)
        fake = g(x)
        d.requires_grad_(True)
        od.zero_grad()
        loss_d = 0.5 * (bce(d(x, fake.detach()), False) + bce(d(x, y), True))
        loss_d.backward()
        od.step()
        d.requires_grad_(False)
        og.zero_grad()
        loss_g = bce(d(x, fake), True) + 100 * F.l1_loss(fake, y)
        loss_g.backward()
        og.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", nargs="+", default=["dcgan"])
    ap.add_argument(
        "--batch-size",
        nargs="+",
        type=int,
        default=None,
        help="default: dcgan 64 512 (the seed's 512), ssgan 100 (the seed's GAN batch)",
    )
    ap.add_argument(
        "--loader",
        nargs="+",
        choices=["synthetic", "memory", "reference"],
        default=["synthetic", "memory"],
        help="reference (pix2pix only): the reference PyTorch code's training step, for comparison",
    )
    ap.add_argument("--precision", nargs="+", default=["fp32", "auto"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="print one JSON object per line")
    ap.add_argument(
        "--set", action="append", default=[], help="config override KEY=VALUE, e.g. generator=resnet"
    )
    ap.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        help="wrap the networks in torch.compile (optionally a mode: default, reduce-overhead, max-autotune)",
    )
    ap.add_argument(
        "--memory-format",
        choices=["channels_last", "contiguous"],
        default=None,
        help="layout of networks and batches (sets $GANKIT_CPU_CHANNELS_LAST; default: channels_last)",
    )
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = ap.parse_args()
    if args.memory_format:
        # inherited by the child processes
        os.environ["GANKIT_CPU_CHANNELS_LAST"] = "on" if args.memory_format == "channels_last" else "off"
    if args.one:
        print(
            json.dumps(
                measure(
                    args.recipe[0],
                    args.batch_size[0],
                    args.loader[0],
                    args.precision[0],
                    args.steps,
                    args.warmup,
                    args.device,
                    args.set,
                    compile_mode=args.compile,
                )
            )
        )
        return
    log = ResultLog("bench-train")
    for recipe in args.recipe:
        for bs in args.batch_size or {
            "dcgan": [64, 512],
            "ssgan": [100],
            "pix2pix": [1, 8],
            "cyclegan": [1],
        }.get(recipe, [64]):
            for precision in args.precision:
                for loader in args.loader:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--one",
                        "--recipe",
                        recipe,
                        "--batch-size",
                        str(bs),
                        "--loader",
                        loader,
                        "--precision",
                        precision,
                        "--steps",
                        str(args.steps),
                        "--warmup",
                        str(args.warmup),
                        "--device",
                        args.device,
                        *[f"--set={x}" for x in args.set],
                        *([f"--compile={args.compile}"] if args.compile else []),
                    ]
                    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    log.add(res, echo=False)
                    if args.json:
                        print(json.dumps(res), flush=True)
                    else:
                        print(
                            f"{res['recipe']:8s} batch {bs:4d} {res['precision']:4s} {loader:9s} "
                            f"{res['images_per_s']:8.1f} img/s  {res['step_ms']:8.1f} ms/step  "
                            f"peak {res['peak_memory_mb']:.0f} MB ({res['peak_memory_kind']}) "
                            f"on {res['device']}",
                            flush=True,
                        )
    log.write()


if __name__ == "__main__":
    main()
