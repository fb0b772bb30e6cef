"""Rank awareness: only the main process writes files and prints progress.

Data-parallel training (torchrun + DDP) is launched from outside; this module only answers
"which process am I", so that the engine's I/O is already correct when DDP is added.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0
