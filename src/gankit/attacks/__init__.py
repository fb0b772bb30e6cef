"""Adversarial attacks on image classifiers, under one contract (see base.py): FGSM, BIM, PGD and
MI-FGSM (gradient.py), APGD and APGD-T (apgd.py), FAB-T (fab.py), Square (square.py) and the
AutoAttack ensemble of the last four (autoattack.py); the registry (registry.py) names them.

atk = PGD(model, eps=4/255, alpha=1/255, steps=10)
adv = atk(images, labels=None)          # images in [0, 1]; labels default to the predictions
"""

from .apgd import APGD, APGDT
from .autoattack import AutoAttack
from .base import Attack, AttackResult
from .classifiers import ImageClassifier, load_classifier
from .fab import FAB
from .gradient import BIM, FGSM, MIFGSM, PGD
from .registry import ATTACKS, make_attack
from .square import Square


def attack_paths(
    method: str, model: str, inputs, eps: str, out, target: str | None = None, device: str = "cpu", **options
) -> dict:
    """The `gankit attack` command as a function: attack image files/folders, save PNGs and a report."""
    from pathlib import Path

    from ..data.images import expand_paths
    from ..device import pick_device
    from .files import attack_files, parse_eps, resolve_target

    eps_list = parse_eps(eps, options.get("norm") or "linf")
    clf = load_classifier(model).to(pick_device(device))
    tgt = resolve_target(target, clf)
    options = {k: v for k, v in options.items() if v is not None}
    return attack_files(clf, expand_paths(inputs), method, eps_list, Path(out), tgt, **options)


def robustness(
    model: str,
    data: str,
    attacks: list[str],
    eps: str,
    out,
    batch_size: int = 32,
    device: str = "cpu",
    **options,
) -> dict:
    """Robust accuracy vs epsilon of `model` on a labelled folder (one sub-folder per class) or the
    test split of a built-in dataset or IDX folder (e.g. `mnist`); `count` keeps the first N images.
    Writes JSON, CSV, a plot and an HTML page into `out`."""
    from pathlib import Path

    import torch

    from ..device import pick_device
    from ..errors import GankitError
    from .evaluate import robustness_curve, write_report
    from .files import parse_eps

    for a in attacks:
        if a not in ATTACKS:
            raise GankitError(f"--attack {a!r}: known attacks are {', '.join(ATTACKS)}")
    clf = load_classifier(model, options.pop("checkpoint", None) or "latest").to(pick_device(device))
    count = options.pop("count", None)
    if count is not None and count < 1:
        raise GankitError(f"--count {count}: expected a positive number of images")
    images, labels = _labelled_images(clf, data)
    if count is not None:
        images, labels = images[:count], labels[:count]
    num_classes = clf.num_classes
    with torch.no_grad():
        width = clf.eval()(images[:1].to(next(clf.parameters()).device)).shape[1]
    if num_classes is not None and width != num_classes:
        raise GankitError(f"--model {model}: gives {width} outputs for its {num_classes} classes")
    if int(labels.max()) >= width:
        raise GankitError(
            f"--data {data}: has class {int(labels.max())}, the model has classes 0..{width - 1}"
        )
    report = robustness_curve(
        clf,
        images,
        labels,
        parse_eps(eps, options.get("norm") or "linf"),
        attacks,
        batch_size,
        **{k: v for k, v in options.items() if v is not None},
    )
    report["model"], report["data"] = clf.name, str(data)
    report["files"] = write_report(report, Path(out), f"{clf.name} on {data}")
    return report


def _labelled_images(clf, data: str):
    """([0, 1] images at the model's input, labels) of a labelled folder or a dataset's test split."""
    from pathlib import Path

    import torch

    from ..data import is_known_dataset, load_dataset
    from ..data.images import list_dirs, list_images
    from ..errors import GankitError
    from .files import load_image_tensor

    folder = Path(data)
    if is_known_dataset(data) or (folder.is_dir() and any(folder.glob("t10k-images-idx3-ubyte*"))):
        size = clf.input_size[0] if clf.input_size else None
        ds = load_dataset(data, "test", image_size=size, channels=clf.channels)
        return ds.images.float().div(255), ds.labels
    names = [n.lower() for n in (clf.class_names or [])]
    images, labels = [], []
    for d in list_dirs(folder):
        key = d.name.lower()
        cls = int(key) if key.isdigit() else (names.index(key) if key in names else None)
        if cls is None or (names and cls >= len(names)):
            raise GankitError(f"{d}: folder name is neither a class id nor a class name of {clf.name}")
        for p in list_images(d):
            images.append(load_image_tensor(p, clf))
            labels.append(cls)
    if not images:
        raise GankitError(
            f"--data {data}: no images in class sub-folders (or give a dataset name such as mnist)"
        )
    return torch.stack(images), torch.tensor(labels)


__all__ = [
    "Attack",
    "AttackResult",
    "FGSM",
    "BIM",
    "PGD",
    "MIFGSM",
    "APGD",
    "APGDT",
    "FAB",
    "Square",
    "AutoAttack",
    "ATTACKS",
    "make_attack",
    "ImageClassifier",
    "load_classifier",
    "attack_paths",
    "robustness",
]
