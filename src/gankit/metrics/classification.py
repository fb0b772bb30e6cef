"""Accuracy, per-class accuracy and the confusion matrix of a classifier's predictions."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def classification_report(pred: torch.Tensor, target: torch.Tensor, class_names: list[str]) -> dict:
    """Overall and per-class accuracy plus the confusion matrix, as plain JSON-able values."""
    k = len(class_names)
    cm = confusion_matrix(pred, target, k)
    support = cm.sum(1)
    per_class = (cm.diag().float() / support.clamp(min=1)).tolist()
    return {
        "accuracy": (pred == target).float().mean().item(),
        "count": len(target),
        "per_class_accuracy": {name: round(a, 6) for name, a in zip(class_names, per_class)},
        "support": {name: int(s) for name, s in zip(class_names, support)},
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
