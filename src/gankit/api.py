"""The Python API behind every CLI command: train, resume, load, sample."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .config import RESUMABLE_KEYS, TrainConfig, flag, load_config
from .device import pick_device, resolve_precision
from .engine import distributed
from .engine.checkpoint import load_checkpoint, load_latest
from .engine.rundir import RunDir
from .engine.trainer import Trainer
from .errors import GankitError
from .recipes import config_classes, get_recipe


def make_config(recipe: str, **options) -> TrainConfig:
    """The recipe's config with `options` applied (unknown keys are an error)."""
    cls = get_recipe(recipe).Config
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise GankitError(f"{recipe}: unknown option --{flag(unknown[0])}")
    cfg = cls(**{k: v for k, v in options.items() if v is not None or k in ("max_steps", "out")})
    cfg.recipe = recipe
    return cfg


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CPU, CUDA and MPS generators


def _resolve_auto_precision(cfg: TrainConfig, device: torch.device) -> None:
    """Store what `--precision auto` means for this run in its config (`resolve_precision`: kept from
    the run on the same device type, else measured once per machine). Process 0 decides alone (the
    others would compete for its cores while it measures); every process trains alike."""
    if cfg.precision == "auto":
        mine = resolve_precision("auto", device, cfg.auto_precision) if distributed.is_main() else None
        cfg.auto_precision = f"{device.type}:{distributed.from_main(mine)}"


def _agree_on_conv_paths(cfg: TrainConfig, device: torch.device) -> None:
    """In a data-parallel CPU run, process 0 alone measures (or reads) the CPU paths' calibration and
    hands it to the others (`gankit.cpu.calibration.agree`)."""
    from .cpu import calibration

    calibration.agree(device, resolve_precision(cfg.precision, device, cfg.auto_precision) == "bf16")


def train(recipe: str, progress: bool = True, **options) -> dict:
    """Train `recipe` with `options` (config field names) into a new run directory.

    Returns a summary dict (run_dir, steps, seconds, images_per_s, last_metrics, ...).
    """
    cfg = make_config(recipe, **options)
    cfg.validate()
    if not cfg.out:
        cfg.out = str(Path("runs") / f"{recipe}-{Path(cfg.data).name or 'data'}")
    run = RunDir(cfg.out)
    cls = get_recipe(recipe)
    if cfg.eval_every and not cls.offers("monitor"):
        raise GankitError(f"--eval-every {cfg.eval_every}: a {recipe} run has no quality metric to monitor")
    with distributed.session(pick_device(cfg.device)) as device:
        distributed.on_main(run.ensure_new)  # fail before spending time on data
        r = _built(cls, cfg, device)
        if distributed.is_main():
            run.create(cfg)
        return Trainer(r, run, progress).fit()


def _built(cls, cfg: TrainConfig, device: torch.device):
    """A fresh recipe of class `cls` for `cfg` on `device`, its data loaded and attached: the data
    resolves what the config left open (size, channels, DiffAugment), then precision and the CPU
    paths' calibration are settled and the networks built from the run's seed."""
    data = cls.load_data(cfg)
    note = cls.resolve_diffaugment(cfg, len(data))
    if note and distributed.is_main():
        print(f"gankit: note: {note}", file=sys.stderr)
    _resolve_auto_precision(cfg, device)
    _agree_on_conv_paths(cfg, device)
    _seed_everything(cfg.seed)
    r = cls(cfg, device)
    r.attach_data(data)
    return r


def build_recipe(recipe: str, **options):
    """A recipe ready to train with `options` (as `train` takes them), without a run directory: what
    `gankit doctor RECIPE` runs one step of."""
    cfg = make_config(recipe, **options)
    cfg.validate()
    return _built(get_recipe(recipe), cfg, pick_device(cfg.device))


def _same_file(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _confirm_extractor(run_dir: Path, stored: TrainConfig, given: str | None) -> None:
    """A run folder may come from someone else, and loading a TorchScript file runs its code: the FID
    extractor its config names is loaded on resume only when the user names it again, or when it is
    the standard network (checked by its published digest)."""
    from .data.download import file_digest
    from .metrics.features import STANDARD

    named = getattr(stored, "extractor", None)
    if not named or _same_file(given, named):
        return
    path = Path(named)
    if path.is_file() and f"sha256:{file_digest(path, 'sha256')}" == STANDARD.digest:
        return
    raise GankitError(
        f"--resume {run_dir}: the run's config names the FID extractor {named}, a TorchScript file "
        f"(loading it runs its code); give --extractor {named} again to confirm you trust it"
    )


def resume(run_dir: str | Path, progress: bool = True, **changes) -> dict:
    """Continue the run in `run_dir` from its latest checkpoint.

    `changes` may only lengthen training (epochs, max_steps) or move it (device, data_dir); any other key
    that differs from the stored config is refused, naming the key.
    """
    run = RunDir(run_dir).require_run().require_checkpoint()
    stored = load_config(run.path, config_classes())
    _confirm_extractor(run.path, stored, changes.get("extractor"))
    cfg = copy.deepcopy(stored)
    for key, value in changes.items():
        if value is None or getattr(cfg, key, None) == value:
            continue
        if key == "extractor" and _same_file(value, cfg.extractor):
            continue
        if key not in RESUMABLE_KEYS:
            what = "would change the model" if key in cfg.model_keys() else "cannot change when resuming"
            raise GankitError(
                f"--{flag(key)} {value}: {what} (the run has {key}={getattr(cfg, key)!r}); "
                "only --epochs, --max-steps, --device, --data-dir and --sync-bn may be given with --resume"
            )
        setattr(cfg, key, value)
    cfg.validate()
    cls = get_recipe(cfg.recipe)
    with distributed.session(pick_device(cfg.device)) as device:
        data = cls.load_data(cfg)
        for key in cfg.model_keys():  # the data must still fit the stored networks
            if getattr(cfg, key) != getattr(stored, key):
                raise GankitError(
                    f"--resume {run_dir}: the data now gives {key}={getattr(cfg, key)!r} but the "
                    f"run was trained with {key}={getattr(stored, key)!r}"
                )
        _resolve_auto_precision(cfg, device)  # kept from the run, unless it moved to another device type
        _agree_on_conv_paths(cfg, device)
        _seed_everything(cfg.seed)  # the checkpoint's RNG state replaces this; other processes reseed
        r = cls(cfg, device)
        r.attach_data(data)
        trainer = Trainer(r, run, progress)
        trainer.resume()
        per_epoch = len(r.batches)
        done = trainer.progress.step
        total, before = cfg.total_steps(per_epoch), stored.total_steps(per_epoch)
        if total < before:
            raise GankitError(
                f"--resume {run_dir}: --epochs/--max-steps may only lengthen training "
                f"({total} steps < the run's {before})"
            )
        if done >= total:
            raise GankitError(
                f"{run_dir}: run already finished ({done} steps); give a larger --epochs or "
                "--max-steps to train longer"
            )
        if distributed.is_main():
            run.save_config(cfg)
        return trainer.fit()


def load_recipe(run_dir: str | Path, device: str = "cpu", checkpoint: str = "latest"):
    """Rebuild a run's recipe from its stored config and load a checkpoint's weights: `latest`, `best`
    (the best-by-metric one that --eval-every keeps) or the path of a checkpoint file of the run."""
    run = RunDir(run_dir).require_run()
    cfg = load_config(run.path, config_classes())
    dev = pick_device(device)
    r = get_recipe(cfg.recipe)(cfg, dev)
    if checkpoint == "best":
        path = run.best_checkpoint
        if not path.is_file():
            raise GankitError(
                f"--checkpoint best: {run.path} has none (train with --eval-every N to keep one)"
            )
        state = load_checkpoint(path, dev)
    elif checkpoint == "latest":
        path, state = load_latest(run.checkpoints, dev)
    elif Path(checkpoint).is_file():  # a checkpoint file of this run kept elsewhere (a benchmark's copy)
        path = Path(checkpoint)
        state = load_checkpoint(path, dev)
    else:
        raise GankitError(f"--checkpoint {checkpoint}: expected latest, best or a checkpoint file")
    r.loaded_from = str(path)
    for k, m in r.modules.items():
        m.load_state_dict(state["modules"][k])
    r.load_extra_state(state.get("extra", {}))
    return r


def load(run_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The trained network of a run (e.g. the DCGAN generator; its EMA when the run kept one), in
    eval mode, rebuilt from the stored config: no flags to repeat."""
    return load_recipe(run_dir, device).inference_module()


def sample(run_dir: str | Path, n: int = 16, seed: int = 0, device: str = "cpu", labels=None) -> torch.Tensor:
    """`n` images (N, C, H, W) in [0, 1] from a trained generator run, reproducibly from `seed`.

    `labels` (conditional runs, e.g. cdcgan): a class name or id for every image, or one per image;
    by default a conditional run draws every class in turn.
    """
    if n <= 0:
        raise GankitError(f"-n {n}: expected a positive number of images")
    r = _generator_run(run_dir, device, labels, "gankit sample")
    return r.sample(n, seed) if labels is None else r.sample(n, seed, labels=labels)


def run_classes(run_dir: str | Path) -> list[str] | None:
    """The class names of a conditional run (None for other runs)."""
    cfg = load_config(RunDir(run_dir).require_run().path, config_classes())
    conditional = get_recipe(cfg.recipe).offers("conditional")
    return list(cfg.class_names) if conditional and getattr(cfg, "class_names", None) else None


def _generator_run(run_dir, device: str, labels, command: str):
    r = load_recipe(run_dir, device)
    r.require("sample", command)
    if labels is not None and not r.offers("conditional"):
        raise GankitError(f"--class: {run_dir} is an unconditional {r.name} run (train cdcgan for classes)")
    return r


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent vectors `a` and `b` (D,) at fractions `t` (T,) -> (T, D);
    linear where the two are (anti)parallel. Gaussian latents keep their typical norm along the way."""
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = (a64 @ b64 / (a64.norm() * b64.norm())).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.sin().abs() < 1e-6:
        return ((1 - t64) * a64 + t64 * b64).to(a.dtype)
    out = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / omega.sin()
    return out.to(a.dtype)


def interpolate(
    run_dir: str | Path, seed_a: int, seed_b: int, steps: int = 16, device: str = "cpu", label=None
) -> torch.Tensor:
    """`steps` images (steps, C, H, W) in [0, 1] along the great circle between the latents of
    `seed_a` and `seed_b` (the first image of `gankit sample --seed A` and of `--seed B`); `label`: the
    class of a conditional run (default: its first class)."""
    if steps < 2:
        raise GankitError(f"--steps {steps}: expected at least 2 images")
    r = _generator_run(run_dir, device, label, "gankit sample --interpolate")
    g = r.generator_module()
    z = [
        torch.randn(1, g.latent_dim, generator=torch.Generator().manual_seed(s))[0] for s in (seed_a, seed_b)
    ]
    path = slerp(z[0], z[1], torch.linspace(0, 1, steps)).to(r.device)
    with torch.no_grad():
        if r.offers("conditional"):
            ids = r.class_ids(label if label is not None else 0).expand(steps).to(r.device)
            images = g(path, ids)
        else:
            images = g(path)
    return images.float().add(1).div(2).clamp(0, 1).cpu()


def export(
    run_dir: str | Path,
    out: str | Path,
    fmt: str = "torchscript",
    network: str | None = None,
    to: str | None = None,
    checkpoint: str = "latest",
) -> dict:
    """Export a run's network (classifier, translator or generator; see gankit.exporter) to `out` as
    TorchScript or ONNX, with `out`.json describing its inputs, outputs and processing; the file's
    outputs are checked against gankit's (1e-5) before it is kept. Returns the side file's content."""
    from . import exporter

    r = load_recipe(run_dir, "cpu", checkpoint)
    return exporter.export(r, out, fmt, network, to, str(run_dir))


def evaluate(
    run_dir: str | Path, data: str | None = None, device: str = "cpu", checkpoint: str = "latest", **options
) -> dict:
    """Evaluate a run with its recipe's measures (SSGAN: accuracy, per class, confusion matrix;
    translation: L1/PSNR/SSIM or cycle L1 and panels) on its held-out split or on `data`; the report
    also lands in RUN/evaluation/ and its summary in the result's 'lines'. Generator runs take
    `num_samples`, `extractor` (a TorchScript file), `feature_precision` (fp32|bf16) and `seed`.
    `checkpoint`: latest, or best (kept by --eval-every)."""
    from .report import write_report

    r = load_recipe(run_dir, device, checkpoint)
    r.require("evaluate", "gankit evaluate")
    result = r.evaluate(run_dir, data, **{k: v for k, v in options.items() if v is not None})
    result["checkpoint"] = Path(r.loaded_from).name
    result["html"] = str(write_report(run_dir, result))
    result["lines"] = [*result["lines"], f"wrote {result['html']}"]
    return result


def classify(
    run_dir: str | Path,
    inputs: list[str | Path],
    device: str = "cpu",
    skip_bad: bool = False,
) -> list[dict]:
    """Predictions of a run's classifier for image files and folders (searched recursively)."""
    from .data.images import expand_paths

    paths = expand_paths(inputs)
    r = load_recipe(run_dir, device)
    r.require("classify", "gankit classify")
    return r.classify(paths, skip_bad)


def translate(
    run_dir: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    to: str | None = None,
    side_by_side: bool = False,
    device: str = "cpu",
    skip_bad: bool = False,
) -> list[dict]:
    """Translate image files and folders with a pix2pix or CycleGAN run; any size and aspect.

    Each output keeps its input's size and name (as PNG) under `out`; folders keep their structure.
    `to` picks the direction of a CycleGAN run (A or B). With `side_by_side` the input and the output
    are written next to each other in one file.
    """
    from . import viz
    from .data.images import BAD_IMAGE_ERRORS, decode, describe_bad_image, expand_paths
    from .io import distinct_stems
    from .translate import translate_image

    r = load_recipe(run_dir, device)
    r.require("translate", "gankit translate")
    net, (size, cin, cout) = r.translator(to)
    paths = expand_paths(inputs)
    out = Path(out)
    results = []
    for path, stem in zip(paths, distinct_stems(paths, [Path(p) for p in inputs])):
        try:
            image = decode(path, cin)
        except BAD_IMAGE_ERRORS as e:
            if skip_bad:
                results.append({"input": str(path), "error": describe_bad_image(e)})
                continue
            raise GankitError(f"{path}: {describe_bad_image(e)}") from None
        y = translate_image(net, image.to(r.device), size, cout).cpu()
        dest = out / f"{stem}.png"
        pic = y.float().div(255)
        if side_by_side:
            x = image.float().div(255)
            x = x.expand(3, -1, -1) if x.shape[0] == 1 and pic.shape[0] == 3 else x
            pic = pic.expand(3, -1, -1) if pic.shape[0] == 1 and x.shape[0] == 3 else pic
            pic = torch.cat([x, pic], dim=-1)
        viz.save_image(pic, dest)
        results.append({"input": str(path), "output": str(dest), "size": [image.shape[-1], image.shape[-2]]})
    return results


def run_dirs(folder: str | Path) -> list[Path]:
    """`folder` itself if it is a run directory, else the run directories directly inside it, sorted."""
    root = Path(folder)
    if (root / "config.json").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("*/config.json"))


def runs(folder: str | Path = "runs") -> list[dict]:
    """One row per run directory under `folder` (or `folder` itself): recipe, data, steps, training wall
    time and the headline number of its last evaluation."""
    from .engine.checkpoint import list_checkpoints

    root = Path(folder)
    if not root.is_dir():
        raise GankitError(f"{root}: no such folder")
    rows = []
    for run in run_dirs(root):
        rd = RunDir(run)
        try:
            cfg = json.loads(rd.config.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        steps = [s for s, _ in list_checkpoints(rd.checkpoints)]
        row = {
            "run": str(run),
            "recipe": cfg.get("recipe"),
            "data": cfg.get("data"),
            "steps": steps[-1] if steps else 0,
            "train_seconds": rd.train_seconds(),
        }
        report = run / "evaluation" / "report.json"
        if report.is_file():
            row.update(read_headline(report))
        rows.append(row)
    return rows


def read_headline(report: Path) -> dict:
    """`headline` of a report file; a report gankit cannot read (another tool's, an older gankit's,
    damaged) gives {"metric": "unreadable report"} rather than stopping the listing."""
    try:
        data = json.loads(report.read_text())
        return headline(data) if isinstance(data, dict) else {"metric": "unreadable report"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return {"metric": "unreadable report"}


def headline(report: dict) -> dict:
    """The main number of an evaluation report: FID (generators), accuracy (classifiers) or L1/cycle L1."""
    if "metrics" in report and "fid" in report["metrics"]:
        return {
            "metric": "fid",
            "value": report["metrics"]["fid"],
            "comparable": report["protocol"]["comparable"],
        }
    if "accuracy" in report:
        return {"metric": "accuracy", "value": report["accuracy"]}
    if "model" in report:
        return {"metric": f"l1 ({report.get('split')})", "value": report["model"]["l1"]}
    cyc = [v for k, v in report.items() if k.startswith("cycle_l1_")]
    return {"metric": "cycle l1", "value": round(sum(cyc) / len(cyc), 5)} if cyc else {}
