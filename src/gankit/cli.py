"""Command line: argument parsing only. Every command calls the Python API.

User errors become one line on stderr and a non-zero exit code, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from . import api
from ._version import __version__
from .attacks.registry import ATTACKS
from .config import TrainConfig, field_type, flag
from .device import PRECISIONS
from .errors import GankitError, TrainingInterrupted
from .recipes import RECIPES

DEMO = {name: cls.demo_options for name, cls in RECIPES.items() if cls.demo_options}


def _add_config_options(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """One --option per config field (except `recipe`), defaults suppressed so that the options a
    user actually typed can be told apart from the recipe's defaults."""
    for f in dataclasses.fields(cls):
        if f.name == "recipe" or not f.metadata.get("cli", True):
            continue
        typ = field_type(cls, f)
        default = f.default
        help_ = _inherited_help(cls, f.name)
        help_ += f" (default: {default})" if default not in (None, "", False) else ""
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_)
        if typ is bool:
            parser.add_argument(f"--{flag(f.name)}", action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(f"--{flag(f.name)}", type=_typed(typ, f.name), metavar=f.name.upper(), **kw)


def _add_resume_refusals(train: argparse.ArgumentParser) -> None:
    """Every recipe option, hidden, on `gankit train` itself: `gankit train --resume RUN --lr 0.5` then
    parses, and the resume refuses --lr by name instead of argparse reading 0.5 as a recipe."""
    taken = {a.dest for a in train._actions}
    for cls in RECIPES.values():
        for f in dataclasses.fields(cls.Config):
            if f.name in taken or f.name == "recipe" or not f.metadata.get("cli", True):
                continue
            taken.add(f.name)
            typ = field_type(cls.Config, f)
            kw = dict(dest=f.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            if typ is bool:
                train.add_argument(f"--{flag(f.name)}", action=argparse.BooleanOptionalAction, **kw)
            else:
                train.add_argument(f"--{flag(f.name)}", type=_typed(typ, f.name), **kw)


def _inherited_help(cls: type, name: str) -> str:
    """A field's help text; a subclass that only changes a default keeps its parent's help."""
    for klass in cls.__mro__:
        for f in dataclasses.fields(klass) if dataclasses.is_dataclass(klass) else ():
            if f.name == name and f.metadata.get("help"):
                return f.metadata["help"]
    return ""


def _typed(typ: type, name: str):
    def convert(text: str):
        try:
            return typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {typ.__name__}, got {text!r}") from None

    convert.__name__ = typ.__name__
    return convert


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the results as one JSON object on stdout",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `gankit` command line: one sub-parser per entry of COMMANDS, each defined beside its command."""
    parser = argparse.ArgumentParser(
        prog="gankit",
        description="Train, evaluate and use GANs on images; attack and measure image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"gankit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def _report(result: dict, as_json: bool, lines: list[str]) -> None:
    from .engine import distributed

    if not distributed.is_main():  # under torchrun, process 0 speaks for all
        return
    if as_json:
        print(json.dumps(result))
    else:
        print("\n".join(lines))


def _train_lines(s: dict) -> list[str]:
    m = s.get("last_metrics", {})
    losses = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if k.startswith("loss") or k.endswith("accuracy"))
    return [
        f"trained {s['steps']} steps in {s['seconds']:.1f} s ({s['images_per_s']} images/s); {losses}",
        f"run directory: {s['run_dir']}",
        f"  previews:   {s['previews']}/",
        f"  loss plot:  {s['loss_plot']}",
        f"  metrics:    {s['run_dir']}/metrics.jsonl",
        f"  config:     {s['run_dir']}/config.json",
        f"  checkpoint: {s['checkpoint']}",
    ]


def _train_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a recipe, or continue a run with --resume",
        description="gankit train RECIPE [options] | gankit train --resume RUN",
    )
    train.add_argument(
        "--resume",
        metavar="RUN",
        default=argparse.SUPPRESS,
        help="continue this run from its latest checkpoint with its stored config",
    )
    for name, typ, text in (
        ("epochs", int, "with --resume: a larger total number of epochs (train longer)"),
        ("max_steps", int, "with --resume: a larger total number of optimisation steps"),
        ("device", str, "with --resume: continue on another device (auto, cpu, cuda, cuda:N, mps)"),
        ("data_dir", str, "with --resume: where the run's dataset files are now, if they moved"),
    ):
        train.add_argument(f"--{flag(name)}", dest=name, type=typ, default=argparse.SUPPRESS, help=text)
    _add_json(train)
    _add_resume_refusals(train)
    recipes = train.add_subparsers(dest="recipe", metavar="RECIPE")
    for name, cls in sorted(RECIPES.items()):
        rp = recipes.add_parser(name, help=cls.summary(), description=cls.summary())
        _add_config_options(rp, cls.Config)
        rp.add_argument(
            "--resume",
            metavar="RUN",
            default=argparse.SUPPRESS,
            help="continue this run; options given must match it, except --epochs/--max-steps",
        )
        _add_json(rp)


def cmd_train(ns: argparse.Namespace) -> None:
    opts = {k: v for k, v in vars(ns).items() if k not in ("command", "recipe", "resume", "json")}
    if "resume" in ns:
        summary = api.resume(ns.resume, **opts)
    elif ns.recipe:
        summary = api.train(ns.recipe, **opts)
    else:
        raise GankitError(f"gankit train: name a recipe ({', '.join(sorted(RECIPES))}) or give --resume RUN")
    _report(summary, "json" in ns, _train_lines(summary))


def _fresh_dir(base: str) -> str:
    path, i = Path(base), 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return str(path)


def _demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="offline demo: train a small model on the embedded data")
    demo.add_argument(
        "--recipe", choices=sorted(DEMO), default="dcgan", help="the recipe the demo trains (default dcgan)"
    )
    demo.add_argument("--out", default=None, help="run directory (default: runs/demo, runs/demo-2, ...)")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    _add_json(demo)


def cmd_demo(ns: argparse.Namespace) -> None:
    opts = dict(DEMO[ns.recipe], device=ns.device, out=ns.out or _fresh_dir("runs/demo"))
    if ns.epochs:
        opts["epochs"] = ns.epochs
    print(
        f"gankit demo: training {ns.recipe} on the embedded Fashion-MNIST subset ({opts['epochs']} epochs, "
        "a few minutes on a CPU)",
        file=sys.stderr,
    )
    summary = api.train(ns.recipe, **opts)
    _report(summary, "json" in ns, _train_lines(summary))


def _sample_parser(sub) -> None:
    sample = sub.add_parser("sample", help="draw images from a trained generator run")
    sample.add_argument("run", help="run directory")
    sample.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    sample.add_argument(
        "-o",
        "--output",
        default=None,
        help="grid PNG to write (default RUN/samples.png unless --separate is given)",
    )
    sample.add_argument(
        "--separate", metavar="DIR", default=None, help="also write each image as DIR/NNNN.png"
    )
    sample.add_argument(
        "--seed", type=int, default=0, help="seed of the latent vectors: the same seed draws the same images"
    )
    sample.add_argument(
        "--class",
        dest="label",
        metavar="NAME|ID",
        default=None,
        help="class of every image (conditional runs, e.g. cdcgan; default: each class in turn, a row each)",
    )
    sample.add_argument(
        "--interpolate",
        nargs=2,
        type=int,
        metavar=("SEED_A", "SEED_B"),
        default=None,
        help="a strip of images along the spherical path between the latents of two seeds",
    )
    sample.add_argument("--steps", type=int, default=16, help="images in an --interpolate strip (default 16)")
    sample.add_argument(
        "--gif", metavar="FILE", default=None, help="with --interpolate: also an animated GIF"
    )
    sample.add_argument("--device", default="cpu", help="where to run the generator (default cpu)")
    _add_json(sample)


def cmd_sample(ns: argparse.Namespace) -> None:
    from . import viz

    if ns.interpolate:
        return cmd_interpolate(ns)
    if ns.gif:
        raise GankitError("--gif: only with --interpolate SEED_A SEED_B")
    images = api.sample(ns.run, ns.n, ns.seed, ns.device, labels=ns.label)
    grid = ns.output or (None if ns.separate else str(Path(ns.run) / "samples.png"))
    classes = api.run_classes(ns.run)
    per_row = ns.n // len(classes) if classes and ns.label is None and ns.n % len(classes) == 0 else None
    if grid:
        viz.save_grid(images, grid, nrow=per_row)
    files = (
        [str(viz.save_image(img, Path(ns.separate) / f"{i:04d}.png")) for i, img in enumerate(images)]
        if ns.separate
        else []
    )
    result = {"grid": grid, "images": len(images), "files": files}
    lines = [f"wrote a grid of {len(images)} samples to {grid}"] if grid else []
    lines += [f"wrote {len(files)} PNGs to {ns.separate}/"] if files else []
    _report(result, "json" in ns, lines)


def cmd_interpolate(ns: argparse.Namespace) -> None:
    from . import viz

    a, b = ns.interpolate
    images = api.interpolate(ns.run, a, b, ns.steps, ns.device, label=ns.label)
    strip = ns.output or str(Path(ns.run) / f"interpolation-{a}-{b}.png")
    viz.save_grid(images, strip, nrow=len(images))
    lines = [f"wrote a strip of {len(images)} images from seed {a} to seed {b} to {strip}"]
    if ns.gif:
        viz.save_gif(images, ns.gif)
        lines.append(f"wrote an animated GIF to {ns.gif}")
    _report({"strip": strip, "gif": ns.gif, "images": len(images)}, "json" in ns, lines)


def _export_parser(sub) -> None:
    export = sub.add_parser(
        "export", help="a run's network as a TorchScript or ONNX file, with a JSON side file"
    )
    export.add_argument("run", help="run directory")
    export.add_argument(
        "--format",
        choices=("torchscript", "onnx"),
        default="torchscript",
        help="torchscript or onnx (onnx needs gankit[export])",
    )
    export.add_argument("-o", "--output", required=True, help="file to write (its side file: FILE.json)")
    export.add_argument(
        "--network",
        choices=("classifier", "translator", "generator"),
        default=None,
        help="which network (default: the classifier, else the translator, else the generator)",
    )
    export.add_argument("--to", choices=("A", "B"), default=None, help="direction of a cyclegan translator")
    export.add_argument("--checkpoint", default="latest", help="latest (default) or best")
    _add_json(export)


def cmd_export(ns: argparse.Namespace) -> None:
    side = api.export(ns.run, ns.output, ns.format, ns.network, ns.to, ns.checkpoint)
    v = side["verified"]
    check = (
        f"outputs within {v['max_abs_difference']:.1e} of gankit's ({v['runtime']})"
        if v["max_abs_difference"] is not None
        else "not run here (install onnxruntime to check it)"
    )
    lines = [
        f"wrote the {side['network']} of {ns.run} as {ns.format} to {ns.output}; {check}",
        f"how to feed and read it: {ns.output}.json",
    ]
    _report(side, "json" in ns, lines)


def _evaluate_parser(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a run (ssgan: test accuracy, per class, confusion matrix), or a classifier's "
        "robustness with --attack",
    )
    evaluate.add_argument("run", nargs="?", help="run directory (not with --attack)")
    evaluate.add_argument(
        "--data",
        default=None,
        help="test data (default: the test split of the run's dataset); with --attack a labelled folder "
        "(one sub-folder per class, named by class id or class name) or a dataset name (its test split)",
    )
    evaluate.add_argument(
        "--attack",
        default=None,
        help="comma-separated attacks (autoattack for the standard, or "
        + ",".join(a for a in ATTACKS if a != "autoattack")
        + "): robust accuracy vs --eps, per attack and the per-sample worst case",
    )
    evaluate.add_argument(
        "--model", default=None, help="with --attack: the classifier (as for gankit attack)"
    )
    evaluate.add_argument(
        "--eps", default="0,1/255,2/255,4/255,8/255", help="with --attack: epsilons in [0, 1]"
    )
    evaluate.add_argument(
        "--steps",
        type=int,
        default=None,
        help="with --attack: iterations (default per attack: 10 for bim, pgd, mifgsm; 100 for apgd, apgdt, "
        "fab and autoattack; queries of square 5000)",
    )
    evaluate.add_argument("--count", type=int, default=None, help="with --attack: the first N images only")
    evaluate.add_argument(
        "--norm", choices=["linf", "l2"], default=None, help="with --attack: threat model (default linf)"
    )
    evaluate.add_argument(
        "--version",
        choices=["standard", "rand"],
        default=None,
        help="with --attack autoattack: standard (APGD-CE, APGD-T, FAB-T, Square) or rand (EOT, for "
        "randomised models)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per batch through the generator and the feature network; with --attack, through "
        "the classifier (AutoAttack pools each attack's survivors into such batches; for small images "
        "a larger batch, e.g. the reference's 250, is faster)",
    )
    evaluate.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="generator runs: images to generate (default 10000, the standard protocol; fewer are quicker "
        "but not comparable with published FIDs)",
    )
    evaluate.add_argument(
        "--extractor",
        default=None,
        help="generator runs: a local TorchScript Inception pool3 file (default: the standard one, downloaded"
        " once and checksummed); loading TorchScript runs its code, so give only a file you trust",
    )
    evaluate.add_argument(
        "--feature-precision",
        choices=("fp32", "bf16"),
        default=None,
        help="generator runs: feature extraction",
    )
    evaluate.add_argument(
        "--seed",
        type=int,
        default=None,
        help="generator runs: sampling seed; with --attack: attack seed (default 0)",
    )
    evaluate.add_argument(
        "--checkpoint",
        choices=("latest", "best"),
        default="latest",
        help="the weights to evaluate: the latest, or the best by the metric --eval-every monitored "
        "(FID on training images, SSGAN validation accuracy)",
    )
    evaluate.add_argument(
        "-o", "--output", default=None, help="with --attack: output folder (default robustness/)"
    )
    evaluate.add_argument("--device", default="cpu", help="where to run the networks (default cpu)")
    _add_json(evaluate)


def cmd_evaluate(ns: argparse.Namespace) -> None:
    if ns.attack:
        return cmd_robustness(ns)
    if not ns.run:
        raise GankitError("gankit evaluate: give a run directory, or --attack with --model and --data")
    r = api.evaluate(
        ns.run,
        ns.data,
        ns.device,
        ns.checkpoint,
        num_samples=ns.num_samples,
        extractor=ns.extractor,
        feature_precision=ns.feature_precision,
        seed=ns.seed,
    )
    _report(r, "json" in ns, r.pop("lines"))


def _classify_parser(sub) -> None:
    classify = sub.add_parser("classify", help="predict classes of images with a classifier run (ssgan)")
    classify.add_argument("run", help="run directory")
    classify.add_argument("inputs", nargs="+", help="image files and/or folders")
    classify.add_argument("-o", "--output", default=None, help="CSV to write (default RUN/predictions.csv)")
    classify.add_argument(
        "--skip-bad-images", action="store_true", help="skip files that cannot be decoded instead of stopping"
    )
    classify.add_argument("--device", default="cpu", help="where to run the classifier (default cpu)")
    _add_json(classify)


def cmd_classify(ns: argparse.Namespace) -> None:
    import csv
    import io

    from .io import write_text_atomic

    rows = api.classify(ns.run, ns.inputs, ns.device, ns.skip_bad_images)
    out = Path(ns.output or Path(ns.run) / "predictions.csv")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "confidence", "top3"])
    for r in rows:
        w.writerow(
            [r["path"], r["label"], f"{r['confidence']:.6f}", "; ".join(f"{a}:{b:.4f}" for a, b in r["top"])]
        )
    write_text_atomic(out, buf.getvalue())
    _report(
        {"csv": str(out), "predictions": rows},
        "json" in ns,
        [f"{r['path']}: {r['label']} ({r['confidence']:.1%})" for r in rows[:20]]
        + ([f"... {len(rows) - 20} more"] if len(rows) > 20 else [])
        + [f"wrote {out}"],
    )


def cmd_robustness(ns: argparse.Namespace) -> None:
    from .attacks import robustness

    if not ns.model or not ns.data:
        raise GankitError("gankit evaluate --attack needs --model and --data (a labelled folder)")
    attacks = [a.strip() for a in ns.attack.split(",") if a.strip()]
    r = robustness(
        ns.model,
        ns.data,
        attacks,
        ns.eps,
        ns.output or "robustness",
        steps=ns.steps,
        norm=ns.norm,
        version=ns.version,
        seed=ns.seed,
        count=ns.count,
        checkpoint=ns.checkpoint,
        batch_size=ns.batch_size,
        device=ns.device,
    )
    from .attacks.evaluate import breakdown_text

    p = r["protocol"]
    lines = [
        f"clean accuracy {r['clean_accuracy']:.2%} on {r['count']} images ({p['norm']}, seed {p['seed']})"
    ]
    if "autoattack" in p:
        a = p["autoattack"]
        lines.append(f"autoattack {a['version']}: {', '.join(a['attacks'])}; {a['steps']} steps")
    lines += [
        f"eps {row['eps']:.4f} {row['attack']:10s} robust accuracy {row['robust_accuracy']:.2%}"
        + (f"  (broken by {breakdown_text(row['breakdown'])})" if row.get("breakdown") else "")
        for row in r["rows"]
    ]
    _warn(r["warnings"])
    _report(r, "json" in ns, lines + [f"wrote {f}" for f in r["files"]])


def _warn(warnings: list[dict]) -> None:
    """Gradient-masking warnings on stderr, one line each (they are in the reports too)."""
    for w in dict.fromkeys(w["message"] for w in warnings):
        print(f"gankit: warning: {w}", file=sys.stderr)


def _attack_parser(sub) -> None:
    attack = sub.add_parser(
        "attack", help="adversarial images at several epsilons, checked after saving as PNG"
    )
    attack.add_argument(
        "method",
        choices=list(ATTACKS),
        help="the attack (apgd, apgdt, fab, square and their ensemble autoattack: Croce and Hein 2020)",
    )
    attack.add_argument(
        "--model",
        required=True,
        help="efficientnet-lite0, torchvision:NAME, a TorchScript file or a gankit ssgan run",
    )
    attack.add_argument("--image", required=True, nargs="+", help="image files and/or folders")
    attack.add_argument(
        "--eps",
        default="0,1/255,2/255,4/255",
        help="comma-separated epsilons in [0, 1] pixel scale, fractions allowed (the seed's 0.005 in [-1, 1] "
        "space is 0.0025 here)",
    )
    attack.add_argument(
        "--target", default=None, help="targeted attack: a class id or name, least-likely or random"
    )
    attack.add_argument(
        "--steps",
        type=int,
        default=None,
        help="iterations (default: 10 for bim, pgd, mifgsm; 100 for apgd, apgdt, fab, autoattack); square: "
        "queries (default 5000)",
    )
    attack.add_argument(
        "--alpha", type=float, default=None, help="step size (default eps/steps; pgd 2.5*eps/steps)"
    )
    attack.add_argument(
        "--norm",
        choices=["linf", "l2"],
        default="linf",
        help="threat model (every attack but fgsm, bim, mifgsm)",
    )
    attack.add_argument("--restarts", type=int, default=1, help="restarts (pgd, apgd, apgdt, fab, square)")
    attack.add_argument(
        "--version",
        choices=["standard", "rand"],
        default="standard",
        help="autoattack: standard, or rand (EOT) for randomised models",
    )
    attack.add_argument(
        "--loss", choices=["ce", "dlr"], default=None, help="apgd's loss: cross-entropy or DLR (default ce)"
    )
    attack.add_argument("--early-stop", action="store_true", help="stop iterating on an image once fooled")
    attack.add_argument("--seed", type=int, default=0, help="seeds random starts and random targets")
    attack.add_argument("-o", "--output", default="attack", help="output folder (default ./attack)")
    attack.add_argument("--device", default="cpu", help="where to run the model (default cpu)")
    _add_json(attack)


def cmd_attack(ns: argparse.Namespace) -> None:
    from .attacks import attack_paths

    r = attack_paths(
        ns.method,
        ns.model,
        ns.image,
        ns.eps,
        ns.output,
        target=ns.target,
        steps=ns.steps,
        alpha=ns.alpha,
        norm=ns.norm,
        restarts=ns.restarts,
        loss=ns.loss,
        version=ns.version if ns.method == "autoattack" else None,
        early_stop=ns.early_stop,
        seed=ns.seed,
        device=ns.device,
    )
    lines = []
    for img in r["images"]:
        c = img["clean"]
        lines.append(f"{img['path']}: {c['label']} ({c['confidence']:.1%})")
        lines += [
            f"  eps {x['eps']:.4f}: {x['label']} ({x['confidence']:.1%})"
            + ("  <- fooled" if x["success"] else "")
            + (f" (by {x['broken_by']})" if x.get("broken_by") not in (None, "clean") else "")
            for x in img["results"]
        ]
    if len(r["images"]) > 1 or ns.method == "autoattack":
        from .attacks.evaluate import breakdown_text

        lines += [
            f"eps {row['eps']:.4f}: {row['fooled']} of {row['images']} images fooled"
            + (f" (by {breakdown_text(row['breakdown'])})" if row.get("breakdown") else "")
            for row in r["summary"]
        ]
    _warn(r["warnings"])
    _report(r, "json" in ns, lines + [f"wrote {ns.output}/report.json and panels"])


def _translate_parser(sub) -> None:
    tr = sub.add_parser(
        "translate",
        help="translate images with a pix2pix or cyclegan run (any size; files or folders)",
    )
    tr.add_argument("run", help="run directory")
    tr.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    tr.add_argument("-o", "--output", required=True, help="output folder (PNG files, same names)")
    tr.add_argument("--to", choices=("A", "B"), default=None, help="direction of a cyclegan run (default B)")
    tr.add_argument("--side-by-side", action="store_true", help="write input and output side by side")
    tr.add_argument("--skip-bad-images", action="store_true", help="skip unreadable files")
    tr.add_argument("--device", default="cpu", help="where to run the translator (default cpu)")
    _add_json(tr)


def cmd_translate(ns: argparse.Namespace) -> None:
    results = api.translate(
        ns.run, ns.inputs, ns.output, ns.to, ns.side_by_side, ns.device, ns.skip_bad_images
    )
    done = [r for r in results if "output" in r]
    lines = [f"translated {len(done)} image(s) into {ns.output}/"]
    lines += [f"skipped {r['input']}: {r['error']}" for r in results if "error" in r]
    _report({"images": results}, "json" in ns, lines)


def _runs_parser(sub) -> None:
    runs = sub.add_parser("runs", help="a table of the runs in a folder: recipe, data, steps, time, metric")
    runs.add_argument("folder", nargs="?", default="runs", help="folder of run directories (default runs/)")
    _add_json(runs)


def cmd_runs(ns: argparse.Namespace) -> None:
    rows = api.runs(ns.folder)
    lines = [f"{'run':<32} {'recipe':<9} {'data':<22} {'steps':>8} {'train time':>10}  metric"]
    for r in rows:
        value = r.get("value")
        metric = f"{r['metric']} {value:.4g}" if isinstance(value, (int, float)) else r.get("metric", "-")
        minutes = f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] else "-"
        name, data = r["run"][-32:], str(r["data"])[-22:]
        lines.append(f"{name:<32} {r['recipe']:<9} {data:<22} {r['steps']:>8} {minutes:>10}  {metric}")
    _report({"runs": rows}, "json" in ns, lines if rows else [f"no runs in {ns.folder}"])


def _serve_parser(sub) -> None:
    serve = sub.add_parser(
        "serve", help="a local web app: generate, translate, classify and attack in the browser (gankit[app])"
    )
    serve.add_argument("runs", nargs="*", help="run directories or folders of runs the app may read")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; any other address needs --auth)",
    )
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    serve.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="require this login (or 'auto': a generated password, printed once); default: "
        "$GANKIT_SERVE_AUTH, which keeps the password out of the process list",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name the app answers to (a proxy's or DNS name); repeatable",
    )
    serve.add_argument(
        "--max-pixels", type=int, default=None, help="largest upload, width x height (default 25,000,000)"
    )
    serve.add_argument(
        "--max-upload-mb", type=float, default=None, help="largest upload file in MB (default 50)"
    )


def cmd_serve(ns: argparse.Namespace) -> None:
    from .app import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, serve

    if not 0 < ns.port < 65536:
        raise GankitError(f"--port {ns.port}: expected 1..65535")
    serve(
        ns.runs,
        ns.host,
        ns.port,
        ns.max_pixels or DEFAULT_MAX_PIXELS,
        auth=ns.auth or os.environ.get("GANKIT_SERVE_AUTH") or None,
        allowed_host=ns.allowed_host,
        max_upload_mb=DEFAULT_MAX_UPLOAD_MB if ns.max_upload_mb is None else ns.max_upload_mb,
    )


def _doctor_parser(sub) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="this machine, the CPU paths' calibration and settings, and each layer's path in a recipe",
        description="gankit doctor [RECIPE]: the machine, the calibration's verdicts (measured now where "
        "missing), what --precision auto means, and with RECIPE the path each layer takes in one "
        "training step",
    )
    doctor.add_argument("recipe", nargs="?", choices=sorted(RECIPES), help="a recipe to run one step of")
    doctor.add_argument("--data", default=None, help="its data (default: the recipe's demo data)")
    doctor.add_argument("--data-dir", default=None, help="where the data's files are")
    doctor.add_argument("--batch-size", type=int, default=None, help="batch size (default: the demo's)")
    doctor.add_argument("--image-size", type=int, default=None, help="image size (default: the data's)")
    doctor.add_argument("--precision", choices=PRECISIONS, default=None, help="precision (default auto)")
    doctor.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    _add_json(doctor)


def cmd_doctor(ns: argparse.Namespace) -> None:
    from . import doctor

    options = {
        k: v
        for k, v in dict(
            data=ns.data,
            data_dir=ns.data_dir,
            batch_size=ns.batch_size,
            image_size=ns.image_size,
            precision=ns.precision,
        ).items()
        if v is not None
    }
    if options and not ns.recipe:
        raise GankitError(f"--{flag(next(iter(options)))}: only with a RECIPE (gankit doctor dcgan ...)")
    r = doctor.report(ns.recipe, ns.device, **options)
    _report(r, "json" in ns, doctor.lines(r))


# Subcommand -> (what adds its parser, what runs it), in the order `gankit --help` lists them.
COMMANDS = {
    "demo": (_demo_parser, cmd_demo),
    "train": (_train_parser, cmd_train),
    "sample": (_sample_parser, cmd_sample),
    "export": (_export_parser, cmd_export),
    "evaluate": (_evaluate_parser, cmd_evaluate),
    "translate": (_translate_parser, cmd_translate),
    "attack": (_attack_parser, cmd_attack),
    "runs": (_runs_parser, cmd_runs),
    "classify": (_classify_parser, cmd_classify),
    "serve": (_serve_parser, cmd_serve),
    "doctor": (_doctor_parser, cmd_doctor),
}


def _speaks() -> bool:
    """Whether this process prints user-facing messages: under torchrun, process 0 (the others stop
    with the same message and exit code; their own tracebacks, for bugs, still print)."""
    from .engine import distributed

    return distributed.is_main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.command:
        parser.print_help()
        return 2
    try:
        COMMANDS[ns.command][1](ns)
    except GankitError as e:
        if _speaks():
            print(f"gankit: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a path the user gave that cannot be read or written (permissions, /proc, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"gankit: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        if _speaks():
            print(f"gankit: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130
    return 0
