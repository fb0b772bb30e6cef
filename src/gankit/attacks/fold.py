"""A frozen classifier's inference graph with batch norms folded into their convolutions.

Attacks run a classifier in eval mode with frozen weights and take gradients w.r.t. the input only.
In that mode a BatchNorm that follows a convolution is a fixed per-channel affine map, which can be
folded into the convolution's weight and bias (the same function, to rounding), and an explicit
symmetric zero padding before a convolution (TensorFlow-style 'same' layers) is the convolution's own
padding. Both remove whole passes over the activations, forward and backward: EfficientNet-Lite0 at
batch 32 spent 22% of an FGSM attack in batch norm and 14% in padding copies on the 2-core AMD EPYC.

The graph comes from `torch.fx.symbolic_trace`; a model that cannot be traced, or whose folded graph
does not reproduce its logits on a probe batch, is used as it is. The user's modules are never
changed: the folded weights are new tensors held by the returned GraphModule.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

_CONV_FUNCTIONS = (F.conv2d, torch.conv2d)
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _conv_call(gm: fx.GraphModule, node: fx.Node) -> dict | None:
    """The arguments of a 2-D convolution node (module or functional) as a dict, else None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        return dict(
            input=node.args[0],
            weight=m.weight,
            bias=m.bias,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
        )
    if node.op == "call_function" and node.target in _CONV_FUNCTIONS:
        call = dict(zip(_CONV_ARGS, node.args))
        call.update(node.kwargs)
        call.setdefault("bias", None)
        call.setdefault("stride", 1)
        call.setdefault("padding", 0)
        call.setdefault("dilation", 1)
        call.setdefault("groups", 1)
        if isinstance(call["padding"], str):
            return None
        for key in ("weight", "bias"):
            value = call[key]
            if isinstance(value, fx.Node):
                if value.op != "get_attr":
                    return None
                call[key] = _attr(gm, value.target)
        return call
    return None


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _symmetric_pad(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, tuple[int, int]] | None:
    """(input, (pad_h, pad_w)) of a symmetric constant-zero 2-D padding node, else None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if type(m) is not nn.ZeroPad2d:
            return None
        pad = tuple(m.padding)
    elif node.op == "call_function" and node.target is F.pad:
        pad = tuple(node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ()))
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        if mode != "constant" or value not in (None, 0, 0.0):
            return None
    else:
        return None
    if len(pad) != 4 or pad[0] != pad[1] or pad[2] != pad[3] or min(pad) < 0:
        return None
    return node.args[0], (pad[2], pad[0])


def fold_for_inference(model: nn.Module, probe: torch.Tensor | None = None) -> nn.Module | None:
    """A GraphModule computing `model` in eval mode with BN and symmetric padding folded into the
    convolutions (new weight tensors, no gradient; the other layers are the model's own modules);
    None when nothing folds, the model cannot be traced, or (with `probe`, run in eval mode by the
    caller) the folded logits differ from the model's beyond rounding."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any model fx cannot trace runs unfolded
        return None
    graph, folded, count = gm.graph, nn.Module(), 0
    gm.add_module("_gankit_folded", folded)
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1:
            continue
        bn = gm.get_submodule(node.target)
        if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats or bn.running_mean is None:
            continue
        conv_node = node.args[0]
        if not isinstance(conv_node, fx.Node) or len(conv_node.users) != 1:
            continue
        call = _conv_call(gm, conv_node)
        if call is None or call["weight"].shape[0] != bn.num_features:
            continue
        w = call["weight"].detach()
        scale = bn.weight.detach().double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64)
        scale = scale / (bn.running_var.double() + bn.eps).sqrt()
        shift = bn.bias.detach().double() if bn.affine else torch.zeros_like(scale)
        b = call["bias"].detach().double() if call["bias"] is not None else torch.zeros_like(scale)
        new_w = torch.empty_like(w).copy_(w.double() * scale.view(-1, 1, 1, 1))
        new_b = ((b - bn.running_mean.double()) * scale + shift).to(w.dtype)
        folded.register_buffer(f"w{count}", new_w)
        folded.register_buffer(f"b{count}", new_b)
        call.update(weight=f"w{count}", bias=f"b{count}")
        pad = _symmetric_pad(gm, call["input"]) if isinstance(call["input"], fx.Node) else None
        if pad is not None and len(call["input"].users) == 1 and _pair(call["padding"]) == (0, 0):
            pad_node = call["input"]
            call["input"], call["padding"] = pad[0], pad[1]
        else:
            pad_node = None
        with graph.inserting_before(conv_node):
            w_node = graph.get_attr(f"_gankit_folded.w{count}")
            b_node = graph.get_attr(f"_gankit_folded.b{count}")
            args = (call["input"], w_node, b_node, call["stride"], call["padding"])
            new = graph.call_function(F.conv2d, (*args, call["dilation"], call["groups"]))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        graph.erase_node(conv_node)
        if pad_node is not None and not pad_node.users:
            graph.erase_node(pad_node)
        count += 1
    if count == 0:
        return None
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    if probe is not None:
        with torch.no_grad():
            want, got = model(probe).float(), gm(probe).float()
        tol = 1e-3 * want.abs().max().item()
        if want.shape != got.shape or not torch.allclose(got, want, rtol=1e-3, atol=tol):
            return None
    return gm
