"""Batch norm whose batch statistics span every process of a torchrun job (`--sync-bn`).

torch's `nn.SyncBatchNorm` runs on GPUs only; this one works on any device and backend (gloo on CPU
too), so N processes at batch B normalise exactly as one process at batch N*B. The statistics are
all-reduced with a differentiable collective (sum, sum of squares and count in one tensor), so the
backward pass sends each process the gradient of every process's loss through them.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn

from ..engine import distributed


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d/3d whose training-mode statistics are those of the global batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), x.numel() / c, device=x.device)
        stats = dist_fn.all_reduce(torch.cat([xf.sum(dims), xf.square().sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm layer inside `module` for a CrossProcessBatchNorm that keeps the same
    parameters and buffers (the optimisers, EMA copies and checkpoints see no difference)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, CrossProcessBatchNorm
        ):
            new = CrossProcessBatchNorm.__new__(CrossProcessBatchNorm)
            new.__dict__.update(child.__dict__)  # same Parameter and buffer objects, same mode
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module
