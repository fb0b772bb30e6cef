"""The dispatch table: which CPU path computes a layer, declared once, chosen per call.

Networks are built from stock layers (`nn.Conv2d`, `nn.ConvTranspose2d`, `nn.Dropout`,
`nn.InstanceNorm2d`, `nn.Flatten`, `nn.Unflatten`, and the U-Net's per-image batch norm). `prepare`
gives each of them, in place, a subclass whose forward asks this table: the layer keeps its parameters,
state-dict keys, hooks and parametrizations, and `restore` takes the subclass away again. For each layer
kind, `TABLE` lists its paths in the order they are tried; the first whose setting is not `off`
(`gankit.cpu.settings`) and whose rule holds (`Path.applies`: shapes, dtype, and for a calibrated path
this machine's verdict) computes the call; none holding, the stock layer does. Every path requires a
CPU tensor outside graph capture (tracing and export record the stock layers, which any runtime has).
`explain` runs a forward pass and says which path each layer took.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import dropout, frequency, layout, narrow, norm, small_map, wgrad, winograd
from .settings import current


@dataclasses.dataclass(frozen=True)
class Path:
    """One way to compute a layer kind: its setting's name, its rule and its kernel, both called as
    f(layer, x, dtype) with the dtype the layer computes in (autocast's, else the input's)."""

    name: str
    applies: Callable[[nn.Module, torch.Tensor, torch.dtype], bool]
    kernel: Callable[[nn.Module, torch.Tensor, torch.dtype], torch.Tensor]


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y + bias per channel, in place and in y's dtype (bf16 under autocast)."""
    return y if bias is None else y.add_(bias.to(y.dtype).view(1, -1, 1, 1))


def _winograd(layer, x, dtype):
    k = layer.kernel_size[0]
    y = winograd.winograd_conv2d(x, layer.weight, layer.padding[0], winograd.WINOGRAD_TILES[k])
    return _add_bias(y, layer.bias)


def _narrow(layer, x, dtype):
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", enabled=False):
        y = narrow.conv2d(x, layer.weight.to(dtype))
    return _add_bias(y, layer.bias)


def _gemm_conv(layer, x, dtype):
    return _add_bias(
        small_map.gemm_conv2d(x, layer.weight, layer.stride, layer.padding, layer.dilation), layer.bias
    )


def _strided(layer, x, dtype):
    return _add_bias(wgrad.strided_conv(x, layer.weight, layer.transposed), layer.bias)


def _frequency(layer, x, dtype):
    with torch.autocast("cpu", enabled=False):
        y = frequency.conv_transpose2d(x.to(dtype), layer.weight.to(dtype), layer.padding)
    return _add_bias(y, layer.bias)


def _gemm_conv_transpose(layer, x, dtype):
    return _add_bias(small_map.gemm_conv_transpose2d(layer, x, layer.output_padding), layer.bias)


def _bias_apart(layer, x, dtype):
    y = F.conv_transpose2d(
        x, layer.weight, None, layer.stride, layer.padding, layer.output_padding, 1, layer.dilation
    )
    return _add_bias(y, layer.bias)


def _fast_dropout(layer, x, dtype):
    return dropout.fast_dropout(x, layer.p, True)


def _per_image_norm(layer, x, dtype):
    w, b = (layer.weight, layer.bias) if layer.weight is not None else (None, None)
    return norm.per_image_norm(x, w, b, layer.eps)


def _flatten(layer, x, dtype):
    return layout.flatten(x)


def _always(layer, x, dtype) -> bool:
    return True


def _has_bias(layer, x, dtype) -> bool:
    return layer.bias is not None


def _flattens_channels_last(layer, x, dtype) -> bool:
    return layout.flattens(x, layer.start_dim, layer.end_dim)


_GEMM_WGRAD = Path("gemm_wgrad", wgrad.applies, _strided)
TABLE: dict[str, tuple[Path, ...]] = {
    "conv2d": (
        Path("winograd", winograd.applies, _winograd),
        Path("narrow_conv", narrow.applies, _narrow),
        Path("small_map", small_map.applies, _gemm_conv),
        Path("small_map_wide", small_map.wide_applies, _gemm_conv),
        _GEMM_WGRAD,
    ),
    "conv_transpose2d": (
        Path("frequency_conv", frequency.applies, _frequency),
        Path("small_map", small_map.applies, _gemm_conv_transpose),
        Path("small_map_wide", small_map.wide_applies, _gemm_conv_transpose),
        _GEMM_WGRAD,
        Path("bias_apart", _has_bias, _bias_apart),
    ),
    "dropout": (Path("fast_dropout", _always, _fast_dropout),),
    "instance_norm": (Path("per_image_norm", norm.applies, _per_image_norm),),
    "per_image_batch_norm": (Path("per_image_norm", norm.applies, _per_image_norm),),
    "flatten": (Path("layout_flatten", _flattens_channels_last, _flatten),),
}


def _exporting() -> bool:
    """True while torch.jit traces or torch.export/ONNX captures a graph: the CPU paths read Python
    sizes off their input, which a graph would freeze, so the stock layers run."""
    compiler = torch.compiler
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or compiler.is_compiling()
        or compiler.is_exporting()
        or getattr(compiler, "_is_non_strict_tracing", lambda: False)()
    )


def _conv_eligible(layer, x) -> bool:
    return (
        x.dim() == 4
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


_ELIGIBLE = {
    "conv2d": _conv_eligible,
    "conv_transpose2d": _conv_eligible,
    "dropout": lambda layer, x: layer.training and layer.p > 0,
    "instance_norm": lambda layer, x: x.dim() == 4 and not layer.track_running_stats,
    "per_image_batch_norm": lambda layer, x: x.dim() == 4 and not layer.training,
    "flatten": lambda layer, x: True,
}
_trace: list | None = None


def _compute_dtype(layer, x) -> torch.dtype | None:
    """The dtype a CPU layer computes `x` in: CPU autocast's where it is on, else x's when the layer's
    weight (if any) has it too, else None (mixed dtypes: the stock layer decides)."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    weight = getattr(layer, "weight", None)
    return x.dtype if weight is None or weight.dtype == x.dtype else None


def _choice(kind: str, layer: nn.Module, x: torch.Tensor) -> tuple[Path | None, torch.dtype | None]:
    """(the path that computes `layer` on `x` or None for the stock layer, the dtype it computes in)."""
    if x.device.type != "cpu" or _exporting() or not _ELIGIBLE[kind](layer, x):
        return None, None
    dtype = _compute_dtype(layer, x)
    if dtype is not None:
        s = current()
        for path in TABLE[kind]:
            if s.enabled(path.name) and path.applies(layer, x, dtype):
                return path, dtype
    return None, dtype


def choose(kind: str, layer: nn.Module, x: torch.Tensor) -> Path | None:
    """The path that computes `layer` (of `kind`) on `x`, or None for the stock layer."""
    return _choice(kind, layer, x)[0]


def run(kind: str, layer: nn.Module, x: torch.Tensor, stock):
    """`layer(x)` by the first path of TABLE[kind] that applies, else by `stock(x)`; the rules are
    asked once per call."""
    path, dtype = _choice(kind, layer, x)
    if _trace is not None:
        shown = dtype if dtype is not None else _compute_dtype(layer, x)
        _trace.append((layer, kind, tuple(x.shape), str(shown), path.name if path else "stock"))
    return stock(x) if path is None else path.kernel(layer, x, dtype)


class _Conv2d:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run("conv2d", self, x, super().forward)


class _ConvTranspose2d:
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:  # an output size picked per call: the stock layer works it out
            return super().forward(x, output_size)
        return run("conv_transpose2d", self, x, super().forward)


class _Dropout:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run("dropout", self, x, super().forward)


class _InstanceNorm2d:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(
            "instance_norm",
            self,
            x,
            lambda t: norm.stock_instance_norm(self, t, super(_InstanceNorm2d, self).forward),
        )


class _PerImageBatchNorm2d:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run("per_image_batch_norm", self, x, super().forward)


class _Flatten:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run("flatten", self, x, super().forward)


class _Unflatten:
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # a map in the networks' layout, any device
        return layout.unflatten(super().forward(x))


def _swaps() -> list[tuple[type, type]]:
    from ..nn.unet import PerImageBatchNorm2d

    return [
        (nn.Conv2d, _Conv2d),
        (nn.ConvTranspose2d, _ConvTranspose2d),
        (nn.Dropout, _Dropout),
        (nn.InstanceNorm2d, _InstanceNorm2d),
        (PerImageBatchNorm2d, _PerImageBatchNorm2d),
        (nn.Flatten, _Flatten),
        (nn.Unflatten, _Unflatten),
    ]


_classes: dict[tuple[type, type], type] = {}


def _dispatching(cls: type, mixin: type) -> type:
    """`cls` with `mixin`'s forward in front, named as `cls` (reprs unchanged); made once per pair."""
    key = (cls, mixin)
    if key not in _classes:
        _classes[key] = type(cls.__name__, (mixin, cls), {"__module__": cls.__module__, "_stock_class": cls})
    return _classes[key]


def prepare_layers(module: nn.Module) -> nn.Module:
    """Give every layer of `module` that has CPU paths its dispatching subclass, in place (idempotent)."""
    swaps = _swaps()
    for m in module.modules():
        if "_stock_class" in type(m).__dict__:
            continue
        for stock, mixin in swaps:
            if isinstance(m, stock):
                m.__class__ = _dispatching(type(m), mixin)
                break
    return module


def restore(module: nn.Module) -> nn.Module:
    """Undo `prepare_layers`: every layer back to its own class."""
    for m in module.modules():
        stock = type(m).__dict__.get("_stock_class")
        if stock is not None:
            m.__class__ = stock
    return module


@contextlib.contextmanager
def tracing():
    """Record, for every dispatching layer called inside, (layer, kind, input shape, dtype, path)."""
    global _trace
    outer, _trace = _trace, []
    try:
        yield _trace
    finally:
        _trace = outer


def explain(module: nn.Module, *inputs, names: dict | None = None) -> list[dict]:
    """One row per call of a dispatching layer in `module(*inputs)`: its name, kind, input shape, the
    dtype it computes in and the path that computed it ("stock": the stock layer)."""
    names = names or {m: n for n, m in module.named_modules()}
    with tracing() as calls:
        module(*inputs)
    return [
        {
            "layer": names.get(layer, type(layer).__name__),
            "kind": kind,
            "input": list(shape),
            "dtype": dtype,
            "path": path,
        }
        for layer, kind, shape, dtype, path in calls
    ]
