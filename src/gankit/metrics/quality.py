"""How good a generator is: FID, KID, precision and recall of its samples against real images, each
number stored with its protocol.

Standard protocol (comparable with published numbers): 10,000 generated images against the real test
split (all of it when smaller), the standard Inception pool3 features (see features.py). Real features
are cached per image content, extractor, resolution and precision: a change of any of them computes
them again.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.download import cache_dir
from ..errors import GankitError
from ..io import atomic_path
from .features import RESIZE, RESOLUTION, Extractor, extract, load_extractor
from .registry import GENERATIVE_METRICS

STANDARD_COUNT = 10_000
MIN_SAMPLES = 10
PRECISIONS = ("fp32", "bf16")


@dataclass
class RealSet:
    """Real images to compare with: uint8 (N, C, H, W) at the generator's resolution, and where from."""

    images: torch.Tensor
    source: str  # e.g. "fashion-mnist:test" or a folder
    split: str  # test, val, train (say so when it is the training data)
    labels: torch.Tensor | None = None  # class ids, for per-class scores of a conditional generator
    classes: list[str] | None = None


def content_key(images: torch.Tensor) -> str:
    """A short hash of the exact image content (so a cache never serves another set's features)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def _batches(images: torch.Tensor, size: int):
    return (images[i : i + size] for i in range(0, len(images), size))


def real_features(
    real: RealSet, extractor: Extractor, precision: str, batch_size: int = 64, progress: bool = True
) -> tuple[torch.Tensor, Path, bool]:
    """(features, cache file, whether they came from the cache) of the real set."""
    key = f"{content_key(real.images)}-{extractor.tag}-{RESOLUTION}-{precision}"
    path = cache_dir() / "feature-cache" / f"{key}.safetensors"
    meta = {
        "source": real.source,
        "split": real.split,
        "count": str(len(real.images)),
        "extractor_sha256": extractor.sha256,
        "resolution": str(RESOLUTION),
        "precision": precision,
    }
    if path.is_file():
        try:
            return load_file(str(path))["features"], path, True
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            path.unlink(missing_ok=True)
    feats = extract(
        extractor, _batches(real.images, batch_size), len(real.images), precision, "real features", progress
    )
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp), metadata=meta)
    return feats, path, False


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded (what a saved PNG holds)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def evaluate_samples(
    fake: torch.Tensor,
    real: RealSet,
    extractor_path: str | None = None,
    precision: str = "fp32",
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    standard_count: int = STANDARD_COUNT,
    fake_labels: torch.Tensor | None = None,
) -> dict:
    """Every registered metric of uint8 `fake` images against `real`, with the protocol. The numbers
    are flagged comparable with published ones from `standard_count` generated images on.

    With `fake_labels` (the classes the images were generated for) and labelled real images, the
    report adds `per_class`: each class's FID, its generated images against its real ones, from the
    same features."""
    if precision not in PRECISIONS:
        raise GankitError(f"--feature-precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    for what, n in (("generated", len(fake)), ("real", len(real.images))):
        if n < MIN_SAMPLES:
            raise GankitError(
                f"{n} {what} images: too few for FID/KID/precision-recall (at least {MIN_SAMPLES}; the "
                f"standard protocol uses {STANDARD_COUNT})"
            )
    extractor = load_extractor(extractor_path, device, progress)
    real_feats, cache, cached = real_features(real, extractor, precision, batch_size, progress)
    fake_feats = extract(extractor, _batches(fake, batch_size), len(fake), precision, "generated", progress)
    values: dict[str, float] = {}
    for fn in GENERATIVE_METRICS.values():
        values.update({k: round(v, 6) for k, v in fn(real_feats, fake_feats, seed).items()})
    protocol = {
        "extractor": "Inception-v3 pool3 (TF FID graph 2015-12-05), TorchScript",
        "extractor_path": extractor.path,
        "extractor_sha256": extractor.sha256,
        "features": extractor.dims,
        "resolution": RESOLUTION,
        "resize": RESIZE,
        "input_scaling": "x / 128 - 1 for x in 0..255; grayscale repeated to RGB",
        "feature_precision": precision,
        "real": {"source": real.source, "split": real.split, "count": len(real.images)},
        "generated": {"count": len(fake), "seed": seed},
        "kid": "cubic polynomial kernel, 100 subsets of min(1000, counts)",
        "precision_recall": "Kynkaanniemi et al. 2019, k = 3",
        "real_feature_cache": str(cache),
        "comparable": len(fake) >= standard_count,
    }
    if not protocol["comparable"]:
        protocol["note"] = (
            f"{len(fake)} generated images: below the standard {standard_count}; FID is biased upwards at "
            "small counts, so this number is not comparable with published ones"
        )
    if real.split == "train":
        print("gankit: note: the real images are the training data (no test split)", file=sys.stderr)
    report = {"metrics": values, "protocol": protocol, "real_features_cached": cached}
    if fake_labels is not None and real.labels is not None:
        report["per_class"] = per_class_fid(real_feats, real.labels, fake_feats, fake_labels, real.classes)
        protocol["per_class"] = "FID of each class's generated images against that class's real images"
    return report


def per_class_fid(
    real_feats: torch.Tensor,
    real_labels: torch.Tensor,
    fake_feats: torch.Tensor,
    fake_labels: torch.Tensor,
    classes: list[str] | None = None,
) -> dict[str, dict]:
    """{class name: {fid, generated, real}} for every class with at least MIN_SAMPLES images of both
    kinds (counts are per class, so these FIDs are biased upwards against the overall one)."""
    from .fid import fid

    out = {}
    for k in sorted(set(fake_labels.tolist()) & set(real_labels.tolist())):
        r, f = real_feats[real_labels == k], fake_feats[fake_labels == k]
        if min(len(r), len(f)) >= MIN_SAMPLES:
            name = classes[k] if classes and k < len(classes) else str(k)
            out[name] = {"fid": round(fid(r, f)["fid"], 4), "generated": len(f), "real": len(r)}
    return out


def evaluate_generator(
    recipe,
    run_dir: str | Path,
    real: RealSet,
    num_samples: int | None = None,
    extractor: str | None = None,
    feature_precision: str = "fp32",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Sample a generator run (`recipe.sample`) and score it against `real`; writes
    RUN/evaluation/report.json and returns the report with its summary 'lines'."""
    from ..io import write_json_atomic

    n = STANDARD_COUNT if num_samples is None else num_samples
    if n < MIN_SAMPLES:
        raise GankitError(f"--num-samples {n}: too few (at least {MIN_SAMPLES}; standard: {STANDARD_COUNT})")
    labels = balanced_labels(n, recipe.cfg.num_classes) if recipe.offers("conditional") else None
    fake = to_uint8(recipe.sample(n, seed) if labels is None else recipe.sample(n, seed, labels=labels))
    report = evaluate_samples(
        fake,
        real,
        extractor,
        feature_precision,
        seed,
        device=recipe.device,
        progress=progress,
        fake_labels=labels,
    )
    report["run_dir"] = str(run_dir)
    report["checkpoint"] = getattr(recipe, "loaded_from", None)
    out = Path(run_dir) / "evaluation" / "report.json"
    write_json_atomic(out, report)
    m, p = report["metrics"], report["protocol"]
    report["lines"] = [
        f"FID {m['fid']:.2f}  KID {m['kid'] * 1000:.2f} x 1e-3 (+- {m['kid_std'] * 1000:.2f})  "
        f"precision {m['precision']:.3f}  recall {m['recall']:.3f}",
        f"  {p['generated']['count']} generated vs {p['real']['count']} real ({p['real']['source']}, "
        f"{p['real']['split']} split), Inception pool3 at {RESOLUTION} px, features {feature_precision}, "
        f"extractor {p['extractor_sha256'][:12]}",
        *([f"  note: {p['note']}"] if "note" in p else []),
        *(
            ["  per class: " + ", ".join(f"{k} {v['fid']:.1f}" for k, v in report["per_class"].items())]
            if report.get("per_class")
            else []
        ),
        f"wrote {out}",
    ]
    return report


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """Class ids 0, 1, ..., K-1, 0, 1, ... for `n` samples: every class equally often (+-1)."""
    return torch.arange(n) % num_classes


_MONITOR_EXTRACTORS: dict[tuple, Extractor] = {}


def fid_of(fake: torch.Tensor, real: RealSet, extractor_path: str | None = None, device="cpu") -> float:
    """FID alone of [0, 1] `fake` images against `real` (cached real features), quietly: for monitoring."""
    from .fid import fid

    key = (extractor_path, str(device))
    if key not in _MONITOR_EXTRACTORS:  # loaded (and hashed: 90 MB) once per process, not per evaluation
        _MONITOR_EXTRACTORS[key] = load_extractor(extractor_path, device, progress=False)
    extractor = _MONITOR_EXTRACTORS[key]
    real_feats, _, _ = real_features(real, extractor, "fp32", progress=False)
    fake_feats = extract(extractor, _batches(to_uint8(fake), 64), len(fake), "fp32", progress=False)
    return fid(real_feats, fake_feats)["fid"]


def translation_quality(
    fake: torch.Tensor,
    real: RealSet,
    extractor: str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> dict:
    """FID, KID, precision and recall of translated images (uint8 or [0, 1]) against the real images of
    the target domain on the same split; the standard protocol of translation papers is the whole
    held-out split, so the numbers count as comparable at that count.

    Returns {"metrics", "protocol"}, or {"skipped": reason} when the split has fewer than MIN_SAMPLES
    images or, with no `extractor` named, the standard one cannot be had (offline, first use): the
    pixel scores still stand then. A named extractor that fails is the user's error and raises.
    """
    fake = to_uint8(fake) if fake.is_floating_point() else fake
    n = min(len(fake), len(real.images))
    if n < MIN_SAMPLES:
        return {"skipped": f"{n} images: too few for FID/KID (at least {MIN_SAMPLES})"}
    if extractor is None:
        from . import features  # looked up at call time (tests point STANDARD at an offline URL)

        try:
            extractor = str(features.standard_extractor(progress=False))
        except GankitError as e:
            return {"skipped": f"{e}; pass --extractor PATH (a local TorchScript Inception pool3)"}
    r = evaluate_samples(fake, real, extractor, precision, device=device, progress=False, standard_count=n)
    r["protocol"]["generated"]["source"] = "translated held-out inputs"
    return {"metrics": r["metrics"], "protocol": r["protocol"]}


def quality_line(name: str, q: dict) -> str:
    """One summary line of a `translation_quality` result."""
    if "skipped" in q:
        return f"  {name}: FID skipped ({q['skipped']})"
    m, p = q["metrics"], q["protocol"]
    return (
        f"  {name}: FID {m['fid']:.2f}  KID {m['kid'] * 1000:.2f} x 1e-3 (+- {m['kid_std'] * 1000:.2f})  "
        f"({p['generated']['count']} translated vs {p['real']['count']} real {p['real']['source']})"
    )
