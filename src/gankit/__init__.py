"""gankit: train, evaluate and use GANs on images; attack and measure image classifiers."""

__version__ = "0.1.0"

from .api import export, interpolate, load, resume, sample, train  # noqa: E402

__all__ = ["train", "resume", "load", "sample", "interpolate", "export", "__version__"]
