"""gankit's CPU fast paths: one module per path, one calibration, one dispatch table.

The paths give gankit its lead over stock PyTorch (and the seed's TensorFlow) on CPU. Each lives in its
own module, whose docstring says when it is used, what it replaces and the benchmark that justifies it:

| path (`GANKIT_CPU_<PATH>`) | module | layer |
| --- | --- | --- |
| channels_last, layout_flatten | `layout` | every network, `nn.Flatten`, `nn.Unflatten` |
| host_memory | `host_memory` | the process's allocator |
| frequency_conv | `frequency` | `nn.ConvTranspose2d` |
| winograd | `winograd` | `nn.Conv2d` |
| gemm_wgrad | `wgrad` | `nn.Conv2d`, `nn.ConvTranspose2d` |
| small_map, small_map_wide | `small_map` | `nn.Conv2d`, `nn.ConvTranspose2d` |
| narrow_conv | `narrow` | `nn.Conv2d` |
| bias_apart | `dispatch` | `nn.ConvTranspose2d` |
| fast_dropout | `dropout` | `nn.Dropout` |
| per_image_norm | `norm` | `nn.InstanceNorm2d`, the U-Net's per-image batch norm |
| (precision) | `precision` | what `--precision auto` means |

Networks (`gankit.nn`) are written with stock layers and know nothing of this package; a recipe hands
each network to `prepare`, which puts it on its device in the networks' layout and lets `dispatch`
choose a path per layer and call. `settings` reads every knob once (`settings.current()`);
`calibration` keeps what this machine measured in one file; `gankit doctor` prints all of it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import calibration, settings
from .dispatch import TABLE, explain, restore
from .host_memory import keep_freed_host_memory
from .layout import memory_format, place
from .settings import override, refresh

__all__ = [
    "TABLE",
    "explain",
    "keep_freed_host_memory",
    "memory_format",
    "override",
    "place",
    "prepare",
    "refresh",
    "restore",
    "settings",
    "calibration",
]


def prepare(module: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """`module` with its layers dispatching to the CPU paths (in place), moved to `device` in the
    networks' layout (`memory_format`). On CUDA and MPS the stock layers run; the layout still applies."""
    from .dispatch import prepare_layers

    prepare_layers(module)
    return (
        module.to(device, memory_format=memory_format())
        if device is not None
        else module.to(memory_format=memory_format())
    )
