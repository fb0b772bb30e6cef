"""The fp32 CPU convolution paths of gankit.nn.fastconv: Winograd's exact algebra, both paths' agreement
with torch's convolutions (output and both gradients), where gankit's layers take them, and their
per-machine measurement."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gankit.nn import fastconv
from gankit.nn.fastconv import (
    GEMM_WGRAD_ENV,
    WINOGRAD_ENV,
    gemm_wgrad_pays,
    strided_conv,
    winograd_conv2d,
    winograd_matrices,
    winograd_pays,
)
from gankit.nn.layers import Conv2d, ConvTranspose2d


@pytest.mark.parametrize("m,r", [(2, 2), (2, 3), (4, 3), (3, 4), (2, 5)])
def test_winograd_matrices_compute_a_correlation_exactly(m, r):
    """A^T [(G g) . (B^T d)] is the 1-D correlation y_i = sum_j d_(i+j) g_j (float64, to rounding)."""
    at, g, bt = winograd_matrices(m, r, torch.float64)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        d, k = (
            torch.randn(m + r - 1, generator=gen, dtype=torch.float64),
            torch.randn(r, generator=gen, dtype=torch.float64),
        )
        want = torch.stack([(d[i : i + r] * k).sum() for i in range(m)])
        assert torch.allclose(at @ ((g @ k) * (bt @ d)), want, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,padding,shape", [(4, 1, (1, 13, 13)), (4, 0, (2, 9, 11)), (3, 1, (2, 10, 7)), (3, 0, (1, 12, 12))]
)
def test_winograd_conv_equals_torch_conv_with_both_gradients(kernel, padding, shape):
    """Output, input gradient and weight gradient as F.conv2d's to fp32 rounding, with sizes that leave
    partial tiles (cropped), batches of 1 and 2; a channels-last result."""
    torch.manual_seed(0)
    n, h, w = shape
    x = torch.randn(n, 8, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = (0.1 * torch.randn(16, 8, kernel, kernel)).requires_grad_()
    y = winograd_conv2d(x, weight, padding, fastconv.WINOGRAD_TILES[kernel])
    y_ref = F.conv2d(x, weight, None, 1, padding)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y - y_ref).abs().max() <= 2e-5 * y_ref.abs().max()
    g = torch.randn_like(y_ref)
    for got, want in zip(torch.autograd.grad(y, [x, weight], g), torch.autograd.grad(y_ref, [x, weight], g)):
        assert got.shape == want.shape and (got - want).abs().max() <= 2e-5 * want.abs().max()


def test_conv2d_takes_the_path_where_it_pays_and_equals_the_stock_layer(monkeypatch):
    """The PatchGAN's 256 -> 512 layer at 32 px (batch 1) and a ResNet block's 3x3 layer at 64 px run by
    Winograd in fp32 (GANKIT_WINOGRAD=1 in the tests), with the stock layer's bias and gradients; not
    under bf16 autocast, on small maps, with few channels, for strided or 5x5 layers, or when off."""
    calls = []
    real = fastconv.winograd_conv2d
    monkeypatch.setattr("gankit.nn.layers.winograd_conv2d", lambda *a: calls.append(1) or real(*a))
    layer = Conv2d(256, 512, 4, 1, 1)
    x = torch.empty(1, 256, 32, 32)
    assert winograd_pays(layer, x) and winograd_pays(Conv2d(256, 256, 3), torch.empty(1, 256, 66, 66))
    assert not winograd_pays(layer, torch.empty(1, 256, 8, 8))  # 4 tiles
    assert not winograd_pays(Conv2d(3, 64, 4, 1, 1), torch.empty(1, 3, 32, 32))
    assert not winograd_pays(Conv2d(256, 512, 4, 2, 1), x)
    assert not winograd_pays(Conv2d(256, 256, 5, 1, 2), x)
    assert not winograd_pays(layer, x.bfloat16())
    with torch.autocast("cpu", torch.bfloat16):
        assert not winograd_pays(layer, x)
    monkeypatch.setenv(WINOGRAD_ENV, "0")
    assert not winograd_pays(layer, x)
    monkeypatch.setenv(WINOGRAD_ENV, "1")

    torch.manual_seed(0)
    small = Conv2d(64, 64, 4, 1, 1).to(memory_format=torch.channels_last)  # 64 channels, 100 tiles at 31 px
    stock = torch.nn.Conv2d(64, 64, 4, 1, 1)
    stock.load_state_dict(small.state_dict())
    x = torch.randn(1, 64, 31, 31).contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_ref = small(x), stock(x)
    assert calls and (y - y_ref).abs().max() <= 2e-5 * y_ref.abs().max()
    g = torch.randn_like(y_ref)
    got = torch.autograd.grad(y, [x, small.weight, small.bias], g)
    want = torch.autograd.grad(y_ref, [x, stock.weight, stock.bias], g)
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= 2e-5 * b.abs().max()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_strided_conv_equals_torch_with_both_gradients(transposed, batch):
    """The 4x4 stride-2 layer with its weight gradient as one GEMM: output and gradients as torch's to
    fp32 rounding, the weight gradient channels-last like the weight."""
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(batch, 32, 10, 12).contiguous(memory_format=cl).requires_grad_()
    shape = (32, 48, 4, 4) if transposed else (48, 32, 4, 4)
    weight = (0.1 * torch.randn(*shape)).contiguous(memory_format=cl).requires_grad_()
    y = strided_conv(x, weight, transposed)
    y_ref = (F.conv_transpose2d if transposed else F.conv2d)(x, weight, None, 2, 1)
    assert y.shape == y_ref.shape and (y - y_ref).abs().max() <= 1e-6 * y_ref.abs().max()
    g = torch.randn_like(y_ref)
    got, want = torch.autograd.grad(y, [x, weight], g), torch.autograd.grad(y_ref, [x, weight], g)
    for a, b in zip(got, want):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert got[1].is_contiguous(memory_format=cl)


def test_layers_take_the_gemm_weight_gradient_where_it_pays(monkeypatch):
    """The U-Net's 1024 -> 256 transposed layer and 256 -> 512 convolution (128+ channels on the pixels'
    side: the transposed layer's input, the convolution's output) take it at batch 1-8 in fp32, with the
    stock layer's output and gradients; not with 64 there, not at batch 100, not under bf16 autocast,
    not when off."""
    up, down = ConvTranspose2d(1024, 256, 4, 2, 1), Conv2d(256, 512, 4, 2, 1)
    assert gemm_wgrad_pays(up, torch.empty(2, 1024, 16, 16)) and gemm_wgrad_pays(
        down, torch.empty(1, 256, 32, 32)
    )
    assert gemm_wgrad_pays(Conv2d(64, 128, 4, 2, 1), torch.empty(1, 64, 128, 128))
    assert not gemm_wgrad_pays(ConvTranspose2d(64, 256, 4, 2, 1), torch.empty(1, 64, 64, 64))
    assert not gemm_wgrad_pays(Conv2d(256, 64, 4, 2, 1), torch.empty(1, 256, 64, 64))
    assert not gemm_wgrad_pays(up, torch.empty(100, 1024, 16, 16))
    assert not gemm_wgrad_pays(ConvTranspose2d(1024, 256, 5, 2, 2), torch.empty(1, 1024, 16, 16))
    with torch.autocast("cpu", torch.bfloat16):
        assert not gemm_wgrad_pays(up, torch.empty(1, 1024, 16, 16))
    monkeypatch.setenv(GEMM_WGRAD_ENV, "0")
    assert not gemm_wgrad_pays(up, torch.empty(1, 1024, 16, 16))
    monkeypatch.setenv(GEMM_WGRAD_ENV, "1")

    calls = []
    real = fastconv.strided_conv
    monkeypatch.setattr("gankit.nn.layers.strided_conv", lambda *a: calls.append(a[2]) or real(*a))
    torch.manual_seed(0)
    for layer, stock in (
        (ConvTranspose2d(512, 32, 4, 2, 1), torch.nn.ConvTranspose2d(512, 32, 4, 2, 1)),
        (Conv2d(32, 512, 4, 2, 1), torch.nn.Conv2d(32, 512, 4, 2, 1)),
    ):
        layer = layer.to(memory_format=torch.channels_last)
        stock.load_state_dict(layer.state_dict())
        x = torch.randn(1, layer.in_channels, 16, 16).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        y, y_ref = layer(x), stock(x)
        assert (y - y_ref).abs().max() <= 1e-5 * y_ref.abs().max()
        g = torch.randn_like(y_ref)
        got = torch.autograd.grad(y, [x, layer.weight, layer.bias], g)
        want = torch.autograd.grad(y_ref, [x, stock.weight, stock.bias], g)
        for a, b in zip(got, want):
            assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert calls == [True, False]


def test_the_paths_are_measured_once_per_machine_and_cached(monkeypatch, capsys):
    """Unforced, the first qualifying layer times both calibration layers both ways; the verdicts are
    cached per machine and kept in the process; a cached verdict is obeyed; one forced path leaves
    the other measured; a damaged or older entry is measured again."""
    from gankit.data.download import cache_dir
    from gankit.device import machine_key

    monkeypatch.delenv(WINOGRAD_ENV)
    monkeypatch.delenv(GEMM_WGRAD_ENV)
    monkeypatch.setattr(fastconv, "_verdicts", {})
    layer, x = Conv2d(256, 512, 4, 1, 1), torch.empty(1, 256, 32, 32)
    up, xu = ConvTranspose2d(1024, 256, 4, 2, 1), torch.empty(1, 1024, 16, 16)
    before = torch.get_rng_state()
    with torch.no_grad():
        use = winograd_pays(layer, x)
    assert torch.equal(torch.get_rng_state(), before)
    key = machine_key(torch.device("cpu"))
    entry = json.loads((cache_dir() / "conv_algorithms.json").read_text())[key]
    for name in ("winograd", "gemm_wgrad", "small_map_wide"):
        e = entry[name]
        assert e["direct_ms"] > 0 and e["fast_ms"] > 0
        assert e["speedup"] == pytest.approx(e["direct_ms"] / e["fast_ms"], rel=0.01)
        assert e["use"] is (e["speedup"] >= fastconv.MIN_SPEEDUP)
    assert use is entry["winograd"]["use"] and gemm_wgrad_pays(up, xu) is entry["gemm_wgrad"]["use"]
    assert "fp32 convolutions: winograd " in capsys.readouterr().err
    monkeypatch.setattr(fastconv, "calibrate_conv_algorithms", lambda: pytest.fail("measured twice"))
    assert winograd_pays(layer, x) is use
    for cached in (True, False):
        monkeypatch.setattr(fastconv, "_verdicts", {})
        verdicts = {
            "winograd": {"use": cached},
            "gemm_wgrad": {"use": not cached},
            "small_map_wide": {"use": cached},
        }
        (cache_dir() / "conv_algorithms.json").write_text(json.dumps({key: verdicts}))
        assert winograd_pays(layer, x) is cached and gemm_wgrad_pays(up, xu) is not cached
        monkeypatch.setenv(GEMM_WGRAD_ENV, "1")
        assert winograd_pays(layer, x) is cached and gemm_wgrad_pays(up, xu)
        monkeypatch.delenv(GEMM_WGRAD_ENV)
    fresh = {
        "winograd": {"use": False, "speedup": 0.5},
        "gemm_wgrad": {"use": True, "speedup": 2.0},
        "small_map_wide": {"use": True, "speedup": 2.0},
        "seconds": 0,
    }
    monkeypatch.setattr(fastconv, "calibrate_conv_algorithms", lambda: fresh)
    damaged = {"winograd": {"use": "yes"}, "gemm_wgrad": {"use": True}, "small_map_wide": {"use": True}}
    for stale in ({"use": True, "speedup": 2.0}, damaged):
        monkeypatch.setattr(fastconv, "_verdicts", {})
        (cache_dir() / "conv_algorithms.json").write_text(json.dumps({key: stale}))
        assert not winograd_pays(layer, x) and gemm_wgrad_pays(up, xu)


def test_winograd_second_derivatives_equal_torchs():
    """Gradients of a weight gradient (as a gradient penalty takes them) flow through every Winograd
    piece, the weight's taps-major transpose included, and equal torch's convolution's."""
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64).contiguous(memory_format=cl).requires_grad_()
    w = (0.1 * torch.randn(16, 16, 4, 4, dtype=torch.float64)).contiguous(memory_format=cl).requires_grad_()

    def second(conv):
        (g,) = torch.autograd.grad(conv(x, w).square().sum(), w, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, w])

    ours = second(lambda a, b: winograd_conv2d(a, b, 1, 3))
    ref = second(lambda a, b: F.conv2d(a, b, None, 1, 1))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())
