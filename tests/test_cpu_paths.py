"""The CPU fast paths of `gankit.cpu`: every path of the dispatch table computes what the stock layer
computes (forward and gradients, fp32 and bf16), the rules that choose them, and their kernels' algebra.

`WITNESSES` names, for every path of `gankit.cpu.dispatch.TABLE`, a layer and an input on which the
table picks that path: a path added to the table without one fails `test_every_path_has_a_witness`.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gankit import cpu
from gankit.cpu import dispatch, frequency, small_map, wgrad, winograd
from gankit.cpu.frequency import _crossover_batch
from gankit.cpu.winograd import WINOGRAD_TILES, winograd_conv2d, winograd_matrices
from gankit.nn.unet import PerImageBatchNorm2d

CL = torch.channels_last


def _eval(layer: nn.Module) -> nn.Module:
    return layer.eval()


# (kind, path) -> (layer factory, input shape, whether the path also computes it under bf16 autocast)
WITNESSES = {
    ("conv2d", "winograd"): (lambda: nn.Conv2d(64, 64, 4, 1, 1), (1, 64, 31, 31), False),
    ("conv2d", "narrow_conv"): (lambda: nn.Conv2d(16, 3, 7, 1, 3), (3, 16, 12, 9), True),
    ("conv2d", "small_map"): (lambda: nn.Conv2d(16, 8, 4, 2, 1), (2, 16, 8, 8), True),
    ("conv2d", "small_map_wide"): (lambda: nn.Conv2d(512, 512, 4, 2, 1), (64, 512, 2, 2), False),
    ("conv2d", "gemm_wgrad"): (lambda: nn.Conv2d(32, 512, 4, 2, 1), (1, 32, 16, 16), False),
    ("conv_transpose2d", "frequency_conv"): (
        lambda: nn.ConvTranspose2d(256, 128, 5, 1, 2),
        (160, 256, 7, 7),
        True,
    ),
    ("conv_transpose2d", "small_map"): (lambda: nn.ConvTranspose2d(16, 8, 4, 2, 1), (2, 16, 1, 1), True),
    ("conv_transpose2d", "small_map_wide"): (
        lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1, bias=False),
        (16, 1024, 4, 4),
        False,
    ),
    ("conv_transpose2d", "gemm_wgrad"): (
        lambda: nn.ConvTranspose2d(512, 32, 4, 2, 1),
        (1, 512, 16, 16),
        False,
    ),
    ("conv_transpose2d", "bias_apart"): (lambda: nn.ConvTranspose2d(8, 5, 3, 2, 1, 1), (3, 8, 8, 8), True),
    ("dropout", "fast_dropout"): (lambda: nn.Dropout(0.3), (4, 16, 32, 32), True),
    ("instance_norm", "per_image_norm"): (lambda: nn.InstanceNorm2d(6, affine=True), (3, 6, 9, 7), True),
    ("per_image_batch_norm", "per_image_norm"): (lambda: _eval(PerImageBatchNorm2d(6)), (3, 6, 9, 7), True),
    ("flatten", "layout_flatten"): (lambda: nn.Flatten(), (3, 4, 5, 5), True),
}


def test_every_path_has_a_witness():
    declared = {(kind, path.name) for kind, paths in dispatch.TABLE.items() for path in paths}
    assert declared == set(WITNESSES)


def _randomised(layer: nn.Module) -> nn.Module:
    """Parameters away from their initial values (a norm's weight 1 and bias 0 would hide a swap)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * (0.05 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0))
    return layer


def _pair(kind_path):
    make, shape, _ = WITNESSES[kind_path]
    stock = _randomised(make()).to(memory_format=CL)
    ours = cpu.prepare(copy.deepcopy(stock))
    x = torch.randn(shape).contiguous(memory_format=CL).requires_grad_()
    return ours, stock, x


def _run(kind, net, x, bf16: bool):
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        path = dispatch.choose(kind, net, x)
        y = net(x)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=g).to(y.dtype)
    grads = torch.autograd.grad(y, [x, *net.parameters()], gy)
    return path, y, grads


def _close(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = want.float().abs().max().clamp_min(1e-6)
    assert (got.float() - want.float()).abs().max() <= tol * scale, ((got - want).abs().max(), scale)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind_path", sorted(WITNESSES), ids=lambda kp: "-".join(kp))
def test_each_path_computes_what_the_stock_layer_computes(kind_path, precision):
    """The witness layer takes its path (in fp32; in bf16 where the path computes bf16) and gives the
    stock layer's output in its dtype and layout, and its input and parameter gradients."""
    kind, name = kind_path
    bf16 = precision == "bf16"
    ours, stock, x = _pair(kind_path)
    if name == "fast_dropout":
        return _check_dropout(ours, x, bf16)
    path, y, grads = _run(kind, ours, x, bf16)
    _, y_ref, grads_ref = _run(kind, stock, x, bf16)
    if not bf16 or WITNESSES[kind_path][2]:
        assert path is not None and path.name == name
    else:
        assert path is None or path.name != name  # an fp32-only path leaves bf16 to another
    tol = 2e-2 if bf16 else 2e-5
    _close(y, y_ref, tol)
    for got, want in zip(grads, grads_ref):
        _close(got, want, 3 * tol)


def _check_dropout(ours, x, bf16):
    """Random masks cannot equal torch's: drop rate p, survivors scaled by 1/(1-p), the gradient
    through the same mask, the input's layout kept."""
    path, y, (gx,) = _run("dropout", ours, x, bf16)
    assert path.name == "fast_dropout"
    xv = x.detach().to(y.dtype)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.01
    _close(y[kept], xv[kept] / 0.7, 1e-2 if bf16 else 1e-6)
    assert y.is_contiguous(memory_format=CL) and ((gx != 0) == kept).all()
    ours.eval()
    assert dispatch.choose("dropout", ours, x) is None and torch.equal(ours(x), x)


def test_prepared_layers_keep_their_parameters_keys_and_class_and_restore_undoes_it():
    from gankit.nn.dcgan import SeedGenerator

    net = SeedGenerator()
    keys, text = list(net.state_dict()), repr(net)
    cpu.prepare(net)
    assert list(net.state_dict()) == keys and repr(net) == text
    assert isinstance(net.up1, nn.ConvTranspose2d) and type(net.up1).__name__ == "ConvTranspose2d"
    assert type(net.up1) is not nn.ConvTranspose2d
    assert cpu.prepare(net) is net  # idempotent
    twin = copy.deepcopy(net)
    assert type(twin.up1) is type(net.up1)
    cpu.restore(net)
    assert type(net.up1) is nn.ConvTranspose2d and list(net.state_dict()) == keys


def test_explain_names_each_layer_and_its_path(cpu_env):
    """DCGAN's seed generator at the seed's batch 512 in fp32: its 7 px 5x5 layer in the frequency
    domain, the stride-2 layers by the stock kernel; switched off, the frequency layer is stock too."""
    from gankit.nn.dcgan import SeedGenerator

    net = cpu.prepare(SeedGenerator().eval())
    with torch.no_grad():
        rows = cpu.explain(net, torch.randn(512, 100))
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer["up1"]["path"] == "frequency_conv" and by_layer["up1"]["input"] == [512, 256, 7, 7]
    assert by_layer["up1"]["kind"] == "conv_transpose2d" and by_layer["up1"]["dtype"] == "torch.float32"
    assert by_layer["up2"]["path"] in ("bias_apart", "stock")
    with cpu.override(frequency_conv="off"), torch.no_grad():
        assert {r["layer"]: r["path"] for r in cpu.explain(net, torch.randn(512, 100))}[
            "up1"
        ] != "frequency_conv"
    cpu_env("GANKIT_CPU_FREQUENCY_CONV", "off")
    with torch.no_grad():
        assert {r["layer"]: r["path"] for r in cpu.explain(net, torch.randn(512, 100))}[
            "up1"
        ] != "frequency_conv"


def test_traced_and_exported_graphs_record_the_stock_layers():
    net = cpu.prepare(nn.Sequential(nn.Conv2d(16, 8, 4, 2, 1), nn.Flatten()))
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=CL)
    assert dispatch.choose("conv2d", net[0], x).name == "small_map"
    traced = torch.jit.trace(net, x)
    assert "small_map" not in str(traced.graph) and torch.allclose(traced(x), net(x), atol=1e-6)


# --- the rules -----------------------------------------------------------------------------------


def _path(kind, layer, x):
    chosen = dispatch.choose(kind, cpu.prepare(layer), x)
    return chosen.name if chosen else "stock"


def test_winograd_rule(cpu_env):
    """The PatchGAN's 256 -> 512 layer at 32 px (batch 1) and a ResNet block's 3x3 layer at 66 px run
    by Winograd in fp32; not on small maps, with few channels, for strided or 5x5 layers, under bf16
    autocast, or when switched off."""
    f32 = torch.float32
    layer, x = nn.Conv2d(256, 512, 4, 1, 1), torch.empty(1, 256, 32, 32)
    assert winograd.applies(layer, x, f32) and winograd.applies(
        nn.Conv2d(256, 256, 3), torch.empty(1, 256, 66, 66), f32
    )
    assert not winograd.applies(layer, torch.empty(1, 256, 8, 8), f32)  # 4 tiles
    assert not winograd.applies(nn.Conv2d(3, 64, 4, 1, 1), torch.empty(1, 3, 32, 32), f32)
    assert not winograd.applies(nn.Conv2d(256, 512, 4, 2, 1), x, f32)
    assert not winograd.applies(nn.Conv2d(256, 256, 5, 1, 2), x, f32)
    assert not winograd.applies(layer, x, torch.bfloat16)
    assert _path("conv2d", layer, x) == "winograd"
    with torch.autocast("cpu", torch.bfloat16):
        assert _path("conv2d", layer, x) == "stock"
    assert _path("conv2d", layer, x.bfloat16()) == "stock"  # a bf16 input to an fp32 layer: stock decides
    cpu_env("GANKIT_CPU_WINOGRAD", "off")
    assert _path("conv2d", layer, x) == "stock"


def test_gemm_weight_gradient_rule(cpu_env):
    """The U-Net's 1024 -> 256 transposed layer and 256 -> 512 convolution (128+ channels on the pixels'
    side) take it at batch 1-8 in fp32; not with 64 there, not at batch 100, not for 5x5 kernels, not
    under bf16 autocast, not when off."""
    f32 = torch.float32
    up, down = nn.ConvTranspose2d(1024, 256, 4, 2, 1), nn.Conv2d(256, 512, 4, 2, 1)
    assert wgrad.applies(up, torch.empty(2, 1024, 16, 16), f32) and wgrad.applies(
        down, torch.empty(1, 256, 32, 32), f32
    )
    assert wgrad.applies(nn.Conv2d(64, 128, 4, 2, 1), torch.empty(1, 64, 128, 128), f32)
    assert not wgrad.applies(nn.ConvTranspose2d(64, 256, 4, 2, 1), torch.empty(1, 64, 64, 64), f32)
    assert not wgrad.applies(nn.Conv2d(256, 64, 4, 2, 1), torch.empty(1, 256, 64, 64), f32)
    assert not wgrad.applies(up, torch.empty(100, 1024, 16, 16), f32)
    assert not wgrad.applies(nn.ConvTranspose2d(1024, 256, 5, 2, 2), torch.empty(1, 1024, 16, 16), f32)
    assert not wgrad.applies(up, torch.empty(1, 1024, 16, 16), torch.bfloat16)
    assert _path("conv_transpose2d", up, torch.empty(1, 1024, 16, 16)) == "gemm_wgrad"
    cpu_env("GANKIT_CPU_GEMM_WGRAD", "off")
    assert _path("conv_transpose2d", up, torch.empty(1, 1024, 16, 16)) == "bias_apart"


def test_small_map_rules(cpu_env):
    """At most SMALL_MAP_PIXELS pixels in the batch: GEMM in any dtype. Above that, wide layers on maps
    of at most 16 px in fp32 only, not on larger maps, larger batches or narrow layers, and only where
    the machine's verdict (here forced by its variable) says so."""
    f32 = torch.float32
    a = nn.Conv2d(16, 8, 4, 2, 1)
    assert small_map.applies(a, torch.empty(2, 16, 8, 8), f32) and not small_map.applies(
        a, torch.empty(100, 16, 7, 7), f32
    )
    wide, shape = nn.Conv2d(512, 512, 4, 2, 1), (64, 512, 2, 2)
    assert small_map.wide_applies(wide, torch.empty(shape), f32)
    assert not small_map.wide_applies(wide, torch.empty(shape), torch.bfloat16)
    assert not small_map.wide_applies(wide, torch.empty(3, 512, 8, 8), f32)
    assert not small_map.wide_applies(wide, torch.empty(8 * 64, 512, 2, 2), f32)
    assert not small_map.wide_applies(
        nn.Conv2d(64, 64, 4, 2, 1), torch.empty(64, 64, 2, 2), f32
    )  # 65 K weights
    cpu_env("GANKIT_CPU_SMALL_MAP_WIDE", "off")
    assert not small_map.wide_applies(wide, torch.empty(shape), f32)
    assert _path("conv2d", wide, torch.empty(shape)) == "stock"
    cpu_env("GANKIT_CPU_SMALL_MAP", "off")
    assert _path("conv2d", a, torch.empty(2, 16, 8, 8)) == "stock"


def test_frequency_domain_rule(cpu_env):
    """DCGAN's 256 -> 128, 5x5 layer at 7 px: in fp32 at the seed's batch (512), under bf16 autocast
    from batch ~24 (the demo's 64); not at fp32 batch 64, bf16 batch 16, for 3x3 kernels, on larger
    maps, under fp16 autocast, for a bf16 input to an fp32 layer, or when off."""
    from gankit.nn.dcgan import SeedGenerator

    layer, x = SeedGenerator().up1, torch.empty(512, 256, 7, 7)
    f32, b16 = torch.float32, torch.bfloat16
    assert frequency.applies(layer, x, f32) and not frequency.applies(layer, x[:64], f32)
    assert not frequency.applies(layer, torch.empty(512, 256, 32, 32), f32)
    assert not frequency.applies(nn.ConvTranspose2d(256, 128, 3, 1, 1), x, f32)
    with torch.autocast("cpu", b16):
        assert frequency.applies(layer, x[:64], b16) and not frequency.applies(layer, x[:16], b16)
    with torch.autocast("cpu", torch.float16):
        assert _path("conv_transpose2d", layer, x) != "frequency_conv"
    assert _path("conv_transpose2d", layer, x.bfloat16()) == "stock"
    cpu_env("GANKIT_CPU_FREQUENCY_CONV", "off")
    assert _path("conv_transpose2d", layer, x) != "frequency_conv"
    cpu_env("GANKIT_CPU_FREQUENCY_CONV", "on")  # on: the documented factor, never measured
    assert frequency.factor(f32) == frequency.FREQUENCY_FACTORS[f32]


def test_layout_flatten_and_unflatten_keep_the_networks_layout():
    net = cpu.prepare(nn.Sequential(nn.Flatten(), nn.Unflatten(1, (4, 5, 5))))
    x = torch.randn(3, 4, 5, 5).contiguous(memory_format=CL).requires_grad_()
    y = net(x)
    assert torch.equal(y, x) and y.is_contiguous(memory_format=CL)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert g.is_contiguous(memory_format=CL)
    assert dispatch.choose("flatten", net[0], x.detach()) is None  # no gradient: a plain view


@pytest.mark.parametrize("batch", [1, 2, 20])
def test_instance_norm_gradients_do_not_depend_on_the_memory_layout(batch):
    """torch 2.13's CPU instance norm gets a single image's gradient wrong when the incoming gradient
    is channels-last; the per-image path (batch <= 16) and the stock one (handed a contiguous
    gradient) both give the NCHW network's gradients."""
    from gankit.nn.unet import norm_layer

    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), norm_layer("instance", 8), nn.Conv2d(8, 3, 3))
    cl = cpu.prepare(copy.deepcopy(ref))
    x = torch.randn(batch, 3, 16, 16)

    def grads(net, inp):
        net.zero_grad(set_to_none=True)
        net(inp).square().mean().backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    a, b = grads(ref, x), grads(cl, x.contiguous(memory_format=CL))
    assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_a_transposed_layer_given_an_output_size_is_the_stock_layer():
    ours, stock, x = _pair(("conv_transpose2d", "bias_apart"))
    got, want = ours(x, output_size=[16, 16]), stock(x, output_size=[16, 16])
    assert got.shape == (3, 5, 16, 16) and torch.allclose(got, want, atol=1e-6)


# --- the kernels ---------------------------------------------------------------------------------


def _agree(y, y_ref, inputs, tol: float) -> None:
    """A kernel's channels-last output `y` and its gradients to `inputs` equal torch's to `tol`."""
    assert y.is_contiguous(memory_format=CL)
    _close(y, y_ref, tol)
    g = torch.randn_like(y_ref)
    for got, want in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(y_ref, inputs, g)):
        _close(got, want, tol)


@pytest.mark.parametrize("m,r", [(2, 2), (2, 3), (4, 3), (3, 4), (2, 5)])
def test_winograd_matrices_compute_a_correlation_exactly(m, r):
    """A^T [(G g) . (B^T d)] is the 1-D correlation y_i = sum_j d_(i+j) g_j (float64, to rounding)."""
    at, g, bt = winograd_matrices(m, r, torch.float64)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        d = torch.randn(m + r - 1, generator=gen, dtype=torch.float64)
        k = torch.randn(r, generator=gen, dtype=torch.float64)
        want = torch.stack([(d[i : i + r] * k).sum() for i in range(m)])
        assert torch.allclose(at @ ((g @ k) * (bt @ d)), want, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,padding,shape", [(4, 1, (1, 13, 13)), (4, 0, (2, 9, 11)), (3, 1, (2, 10, 7)), (3, 0, (1, 12, 12))]
)
def test_winograd_conv_equals_torch_conv_with_both_gradients(kernel, padding, shape):
    """Sizes that leave partial tiles (cropped), batches of 1 and 2; a channels-last result."""
    torch.manual_seed(0)
    n, h, w = shape
    x = torch.randn(n, 8, h, w).contiguous(memory_format=CL).requires_grad_()
    weight = (0.1 * torch.randn(16, 8, kernel, kernel)).requires_grad_()
    y = winograd_conv2d(x, weight, padding, WINOGRAD_TILES[kernel])
    y_ref = F.conv2d(x, weight, None, 1, padding)
    _agree(y, y_ref, [x, weight], 2e-5)


def test_winograd_second_derivatives_equal_torchs():
    """Gradients of a weight gradient (as a gradient penalty takes them) flow through every Winograd
    piece, the weight's taps-major transpose included, and equal torch's convolution's."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    w = (0.1 * torch.randn(16, 16, 4, 4, dtype=torch.float64)).contiguous(memory_format=CL).requires_grad_()

    def second(conv):
        (g,) = torch.autograd.grad(conv(x, w).square().sum(), w, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, w])

    ours = second(lambda a, b: winograd_conv2d(a, b, 1, 3))
    ref = second(lambda a, b: F.conv2d(a, b, None, 1, 1))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_strided_conv_equals_torch_with_both_gradients(transposed, batch):
    """The weight gradient channels-last like the weight."""
    torch.manual_seed(0)
    x = torch.randn(batch, 32, 10, 12).contiguous(memory_format=CL).requires_grad_()
    shape = (32, 48, 4, 4) if transposed else (48, 32, 4, 4)
    weight = (0.1 * torch.randn(*shape)).contiguous(memory_format=CL).requires_grad_()
    y = wgrad.strided_conv(x, weight, transposed)
    y_ref = (F.conv_transpose2d if transposed else F.conv2d)(x, weight, None, 2, 1)
    _close(y, y_ref, 1e-6)
    g = torch.randn_like(y_ref)
    got, want = torch.autograd.grad(y, [x, weight], g), torch.autograd.grad(y_ref, [x, weight], g)
    for a, b in zip(got, want):
        _close(a, b, 1e-5)
    assert got[1].is_contiguous(memory_format=CL)


@pytest.mark.parametrize(
    "c_in,c_out,kernel,padding,shape",
    [
        (256, 128, 5, 2, (3, 7, 7)),
        (32, 16, 5, 2, (2, 8, 9)),
        (16, 24, 7, 3, (2, 5, 4)),
        (16, 8, 5, 0, (2, 6, 6)),
    ],
)
@pytest.mark.parametrize("channels_last", [True, False])
def test_frequency_domain_transposed_conv_equals_the_stock_one(
    c_in, c_out, kernel, padding, shape, channels_last
):
    """Products of spectra (DFTs as matrices): torch's output and gradients to fp32 rounding, in either
    input layout, for any padding below the kernel."""
    torch.manual_seed(0)
    n, h, w = shape
    x = torch.randn(n, c_in, h, w)
    x = (x.contiguous(memory_format=CL) if channels_last else x).requires_grad_()
    weight = torch.randn(c_in, c_out, kernel, kernel, requires_grad=True)
    y = frequency.conv_transpose2d(x, weight, (padding, padding))
    y_ref = F.conv_transpose2d(x, weight, None, 1, padding)
    _agree(y, y_ref, [x, weight], 1e-5)


def test_frequency_domain_transposed_conv_in_bf16_is_as_close_as_the_direct_bf16_kernel():
    """In bf16 the frequency path's output and gradients stay within 2x the error of oneDNN's direct
    bf16 kernel (measured: 1.48x, 4.3e-3 of the norm), both against fp32."""
    torch.manual_seed(0)
    x = torch.randn(64, 256, 7, 7).contiguous(memory_format=CL).requires_grad_()
    weight = (0.02 * torch.randn(256, 128, 5, 5)).requires_grad_()
    g = torch.randn(64, 128, 7, 7)

    def outputs(conv, dtype):
        y = conv(x.to(dtype), weight.to(dtype), (2, 2))
        return [y.float(), *(t.float() for t in torch.autograd.grad(y, [x, weight], g.to(dtype)))], y.dtype

    def direct(x, w, padding):
        return F.conv_transpose2d(x, w, None, 1, padding)

    exact, _ = outputs(direct, torch.float32)
    ours, dtype = outputs(frequency.conv_transpose2d, torch.bfloat16)
    onednn, _ = outputs(direct, torch.bfloat16)
    assert dtype == torch.bfloat16
    for got, ref, want in zip(ours, onednn, exact):
        error = ((got - want).norm() / want.norm()).item()
        assert 0 < error <= 2 * ((ref - want).norm() / want.norm()).item() and error < 1e-2


def test_narrow_conv_without_input_or_weight_gradients():
    """A first layer (input without gradient) and a frozen layer (weight without gradient)."""
    ours, stock, x = _pair(("conv2d", "narrow_conv"))
    x = x.detach()
    ours(x).square().sum().backward()
    (ref_grad,) = torch.autograd.grad(stock(x).square().sum(), stock.weight)
    _close(ours.weight.grad, ref_grad, 1e-4)
    ours.requires_grad_(False)
    xi, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xi).square().sum().backward()
    stock(xr).square().sum().backward()
    _close(xi.grad, xr.grad, 1e-4)


def test_the_crossover_batch_is_where_the_two_lines_meet():
    # direct 2 ms an image; frequency 20 ms once + 1 ms an image: 2b = 1.1 (20 + b) at b = 22 / 0.9
    assert _crossover_batch([(16, 0.032, 0.036), (64, 0.128, 0.084)], 1.1) == pytest.approx(22 / 0.9)
    assert _crossover_batch([(16, 0.032, 0.008), (64, 0.128, 0.032)], 1.1) == 1.0  # faster at any batch
    assert _crossover_batch([(16, 0.032, 0.036), (64, 0.128, 0.125)], 1.1) is None  # never 1.1x per image
