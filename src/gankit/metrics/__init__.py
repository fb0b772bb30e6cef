"""Metrics: classification scores now; FID/KID/IS for generators come behind the same package."""

from .classification import classification_report, confusion_matrix

__all__ = ["classification_report", "confusion_matrix"]
