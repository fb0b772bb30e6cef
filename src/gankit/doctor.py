"""`gankit doctor [RECIPE]`: what this machine is and what gankit chose on it, in one report.

The machine (CPU model and kind, threads, torch build, accelerators), every CPU path's setting, the
calibration's verdicts with the ratios they were measured by (measuring what is missing, as a first
training run would), what `--precision auto` means here, and, for a recipe, the path each layer took
in one real training step on its data (the embedded demo data by default).
"""

from __future__ import annotations

import collections

import torch

from .cpu import algorithms, calibration, dispatch, frequency, machine, settings
from .cpu.precision import auto_precision
from .device import pick_device
from .errors import GankitError


def _verdicts(device: torch.device, bf16: bool) -> dict:
    """The calibration's sections for `device`: measured (or read) now where a run would need them."""
    precision = auto_precision(device)
    if device.type == "cpu":
        algorithms.verdicts()
        frequency.factor(torch.float32)
        if bf16 or precision == "bf16":  # bf16 is measured only where layers compute in it
            frequency.factor(torch.bfloat16)
    return {"precision_auto": precision, "sections": calibration.known(device)}


def _layers(recipe: str, options: dict) -> dict:
    """One training step of `recipe` with `options`, every dispatching layer's calls grouped by
    (network.layer, kind, input shape, dtype, path)."""
    from . import api

    defaults = dict(api.get_recipe(recipe).demo_options or {})
    if "data" not in options and "data" not in defaults:
        raise GankitError(
            f"doctor {recipe}: --data is needed (the {recipe} recipe has no embedded demo data)"
        )
    keep = ("data", "image_size", "batch_size", "channels", "load_size", "generator", "latent_dim")
    opts = {k: v for k, v in defaults.items() if k in keep} | options
    r = api.build_recipe(recipe, **opts)
    names = {
        m: f"{net}.{sub}" if sub else net
        for net, module in r.modules.items()
        for sub, m in module.named_modules()
    }
    batch = next(iter(r.batches.epoch(0)))
    with dispatch.tracing() as calls:
        r.train_step(batch)
    counts = collections.Counter(
        (names.get(layer, type(layer).__name__), kind, tuple(shape), dtype, path)
        for layer, kind, shape, dtype, path in calls
    )
    rows = [
        {"layer": n, "kind": k, "input": list(s), "dtype": d.removeprefix("torch."), "path": p, "calls": c}
        for (n, k, s, d, p), c in counts.items()
    ]
    per_path = collections.Counter()
    for (*_, path), n in counts.items():
        per_path[path] += n
    cfg = r.cfg
    return {
        "recipe": recipe,
        "data": cfg.data,
        "batch_size": cfg.batch_size,
        "precision": {None: "fp32", torch.bfloat16: "bf16"}.get(r.amp_dtype, str(r.amp_dtype)),
        "device": str(r.device),
        "layers": rows,
        "paths": dict(per_path),
    }


def report(recipe: str | None = None, device: str = "auto", **options) -> dict:
    """The doctor's report as a dict (what `gankit doctor --json` prints)."""
    dev = pick_device(device)
    out = {
        "machine": machine.describe(),
        "key": machine.machine_key(dev),
        "settings": dict(settings.current().modes),
        "forced_precision": settings.current().precision,
        "calibration_mode": calibration.mode(),
        "calibration_file": str(calibration.path()),
    }
    out.update(_verdicts(dev, options.get("precision") == "bf16"))
    if recipe is not None:
        out["recipe"] = _layers(recipe, {**options, "device": str(dev)})
    return out


def _section_lines(sections: dict) -> list[str]:
    lines = []
    for name, e in sorted(sections.items()):
        how = "default, unmeasured" if e.get("unmeasured") else f"measured in {e.get('seconds', 0):.1f} s"
        if name == "precision":
            ratio = f", bf16 autocast {e['bf16_speedup']:.2f}x fp32" if "bf16_speedup" in e else ""
            lines.append(f"  precision auto: {e['precision']}{ratio} ({how})")
        elif name == "conv_algorithms":
            for n in algorithms.NAMES:
                ratio = f", {e[n]['speedup']:.2f}x oneDNN" if "speedup" in e[n] else ""
                lines.append(f"  {n}: {'on' if e[n]['use'] else 'off'}{ratio} ({how})")
        elif name.startswith("frequency_conv/"):
            dtype = name.split("/", 1)[1]
            if not e["factor"]:
                verdict = "never pays"
            elif e.get("crossover_batch") is not None:
                verdict = f"from batch ~{e['crossover_batch']:.0f} on DCGAN's 7 px layer"
            else:
                verdict = f"factor {e['factor']:g}"
            ratio = f", {e['speedup']:.2f}x direct at batch {e['batch']}" if "speedup" in e else ""
            lines.append(f"  frequency_conv {dtype}: {verdict}{ratio} ({how})")
    return lines


def lines(r: dict) -> list[str]:
    """The report as the lines `gankit doctor` prints."""
    m = r["machine"]
    features = ", ".join(f"{n} {'yes' if present else 'no'}" for n, present in m["features"].items())
    out = [
        f"machine: {m['cpu']} ({m['cpu_kind']}; {features}), "
        f"{m['cores']} cores, {m['threads']} torch threads",
        f"torch {m['torch']} (CUDA build {m['cuda_build'] or 'none'}, "
        f"oneDNN {'yes' if m['mkldnn'] else 'no'}), python {m['python']}; "
        f"accelerators: {', '.join(m['devices']) or 'none'}",
        f"calibration ({r['calibration_mode']}): {r['calibration_file']}",
        *_section_lines(r["sections"]),
        f"--precision auto means {r['precision_auto']}"
        + (f" (forced by ${settings.PRECISION_ENV})" if r["forced_precision"] else ""),
        "CPU paths (GANKIT_CPU_<PATH>=auto|on|off):",
        *(f"  {line}" for line in settings.describe()),
    ]
    rec = r.get("recipe")
    if rec:
        out.append(
            f"{rec['recipe']} on {rec['data']}, batch {rec['batch_size']}, {rec['precision']}, "
            f"{rec['device']}: one training step, each layer's path"
        )
        width = max(len(row["layer"]) for row in rec["layers"])
        out.append(f"  {'layer':<{width}}  {'kind':<20} {'input':<20} {'dtype':<9} {'path':<15} calls")
        for row in rec["layers"]:
            shape = "x".join(map(str, row["input"]))
            out.append(
                f"  {row['layer']:<{width}}  {row['kind']:<20} {shape:<20} {row['dtype']:<9} "
                f"{row['path']:<15} {row['calls']}"
            )
        out.append("  calls per path: " + ", ".join(f"{p} {n}" for p, n in sorted(rec["paths"].items())))
    return out
