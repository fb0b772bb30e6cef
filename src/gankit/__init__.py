"""gankit: train, evaluate and use GANs on images; attack and measure image classifiers."""

__version__ = "0.1.0"

from .api import load, resume, sample, train  # noqa: E402

__all__ = ["train", "resume", "load", "sample", "__version__"]
