"""Labelled subsets for semi-supervised learning: balanced, without replacement, reproducible."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..errors import GankitError


def nonempty_classes(labels: torch.Tensor, num_classes: int, class_names=None) -> list[int]:
    """The classes that have labelled examples; a note on stderr names any that have none (EMNIST
    letters' class 0, for instance), which the labelled subset then leaves out."""
    counts = torch.bincount(labels[labels >= 0], minlength=num_classes)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if empty:
        named = ", ".join(f"{c} ({class_names[c]!r})" if class_names else str(c) for c in empty)
        print(
            f"gankit: note: {'class' if len(empty) == 1 else 'classes'} {named} "
            f"{'has' if len(empty) == 1 else 'have'} no labelled training images; the labelled subset "
            f"is drawn from the other {num_classes - len(empty)} classes",
            file=sys.stderr,
        )
    return [c for c in range(num_classes) if counts[c] > 0]


def balanced_subset(
    labels: torch.Tensor, n: int, num_classes: int, seed: int, classes: list[int] | None = None
) -> torch.Tensor:
    """Sorted indices of `n` examples, the same number from each of `classes` (default: all
    `num_classes`), drawn without replacement.

    `labels` < 0 mark unlabelled examples, which are never picked.
    """
    classes = list(range(num_classes)) if classes is None else classes
    if n % len(classes):
        what = "classes" if len(classes) == num_classes else "classes that have images"
        raise GankitError(f"--labels {n}: must be a multiple of the number of {what} ({len(classes)})")
    per_class = n // len(classes)
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in classes:
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < per_class:
            raise GankitError(
                f"--labels {n}: needs {per_class} labelled images of class {c}, the data has {len(pool)}"
            )
        picks.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def read_indices(path: str | Path, size: int, labels: torch.Tensor) -> torch.Tensor:
    """Indices from a JSON file (a list, or {"indices": [...]} as gankit writes), checked against the data."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GankitError(f"--labels-file {path}: cannot read a JSON list of indices ({e})") from None
    idx = obj.get("indices") if isinstance(obj, dict) else obj
    if not isinstance(idx, list) or not idx or not all(isinstance(i, int) for i in idx):
        raise GankitError(f"--labels-file {path}: expected a non-empty JSON list of integer indices")
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise GankitError(f"--labels-file {path}: index {bad[0]} out of range for {size} training images")
    t = torch.tensor(sorted(set(idx)), dtype=torch.int64)
    if len(t) != len(idx):
        raise GankitError(f"--labels-file {path}: indices repeat; each labelled image must appear once")
    if (labels[t] < 0).any():
        raise GankitError(f"--labels-file {path}: points at images that have no label")
    return t


def holdout(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of `n` labelled examples (`labels` >= 0) drawn at random: a validation split
    (empty for n = 0). Its own fixed generator, so the split is the same whatever else a run draws,
    whatever its seed and whichever recipe holds it out: a pseudo-labeller and the runs it serves
    select on the same images, and a label draw beside it is the same in every recipe."""
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    pool = torch.nonzero(labels >= 0).flatten()
    if n > len(pool) - 1:
        raise GankitError(
            f"--validation {n}: the data has {len(pool)} labelled images; hold out fewer (0 = none)"
        )
    g = torch.Generator().manual_seed(0)
    return pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
