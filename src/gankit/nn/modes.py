"""Train/eval flags kept per module: `nn.Module.train(flag)` recurses, so restoring only the root's flag
would overwrite an eval-mode network inside a train-mode wrapper (batch norm would then update its
running statistics)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch.nn as nn


@contextmanager
def modes_kept(modules: nn.Module | Iterable[nn.Module]) -> Iterator[None]:
    """On exit, every submodule of `modules` gets back the train/eval flag it had on entry."""
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    flags = [(m, m.training) for root in roots for m in root.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
