"""gankit: train, evaluate and use GANs on images; attack and measure image classifiers."""

from ._version import __version__
from .api import export, interpolate, load, resume, sample, train

__all__ = ["train", "resume", "load", "sample", "interpolate", "export", "__version__"]
