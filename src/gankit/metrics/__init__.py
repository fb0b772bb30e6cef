"""Metrics: classification scores, and feature-space metrics of generated images (FID, KID, precision
and recall) behind a registry; `gankit.metrics.quality` evaluates a generator run with them."""

from . import fid, kid, precision_recall  # noqa: F401  (each registers itself)
from .classification import classification_report, confusion_matrix
from .registry import GENERATIVE_METRICS, register_metric

__all__ = ["classification_report", "confusion_matrix", "GENERATIVE_METRICS", "register_metric"]
