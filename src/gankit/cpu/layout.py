"""Networks and image batches in channels-last (NHWC) layout, and flatten/unflatten that keep it.

Rule: on by default, on every device: oneDNN on CPUs and cuDNN's tensor-core kernels run channels-last
fastest. `$GANKIT_CPU_CHANNELS_LAST=off` gives NCHW (the benchmarks' way of measuring the difference:
the NCHW column of benchmarks/cuda.sh). Path `layout_flatten`: `nn.Flatten` of a channels-last map
hands its gradient back channels-last, and `nn.Unflatten` to a map returns it channels-last. A stock
flatten's gradient came back NCHW to a channels-last network: mixed-layout elementwise kernels and a
reorder in the convolution's backward, 12% of the DCGAN step at batch 512 on the AMD EPYC. Justified by
the DCGAN and SSGAN rows of benchmarks/run_all.py.
"""

from __future__ import annotations

import torch

from .settings import current


def memory_format() -> torch.memory_format:
    """The layout networks and image batches take: channels-last unless switched off."""
    return torch.contiguous_format if current().mode("channels_last") == "off" else torch.channels_last


def place(x: torch.Tensor) -> torch.Tensor:
    """A 4-D image batch in the layout networks take (`memory_format`); other tensors unchanged."""
    return x.contiguous(memory_format=memory_format()) if x.dim() == 4 else x


class _FlattenKeepingLayout(torch.autograd.Function):
    """x.flatten(1) (C, H, W order, as stock) whose gradient comes back in x's memory layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.flatten(1)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # torch ops: differentiable again
        return g.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


def flattens(x: torch.Tensor, start_dim: int, end_dim: int) -> bool:
    """Whether `nn.Flatten(start_dim, end_dim)` of `x` takes the layout-keeping path: a channels-last
    4-D map that needs a gradient, flattened from dim 1 to the end."""
    return (
        x.dim() == 4
        and start_dim == 1
        and end_dim in (-1, 3)
        and x.requires_grad
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def flatten(x: torch.Tensor) -> torch.Tensor:
    """`x.flatten(1)` (C, H, W order) of a channels-last map, its gradient handed back channels-last."""
    return _FlattenKeepingLayout.apply(x)


def unflatten(y: torch.Tensor) -> torch.Tensor:
    """A map that `nn.Unflatten` made, in the networks' layout."""
    return place(y)
