"""Winograd convolutions (gankit.nn.winograd): exact algebra, fp32 agreement with torch's convolution
(output and both gradients), where gankit's Conv2d takes the path, and its per-machine measurement."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gankit.nn import winograd
from gankit.nn.layers import Conv2d
from gankit.nn.winograd import WINOGRAD_ENV, winograd_conv2d, winograd_matrices, winograd_pays


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
    y = winograd_conv2d(x, weight, padding, winograd.WINOGRAD_TILES[kernel])
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
    real = winograd.winograd_conv2d
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


def test_the_path_is_measured_once_per_machine_and_cached(monkeypatch, capsys):
    """Unforced, the first qualifying layer times the calibration layer both ways; the verdict is
    cached per machine and kept in the process; a cached verdict is obeyed; a damaged entry is
    measured again."""
    from gankit.data.download import cache_dir
    from gankit.device import machine_key

    monkeypatch.delenv(WINOGRAD_ENV)
    monkeypatch.setattr(winograd, "_winograd_verdicts", {})
    layer, x = Conv2d(256, 512, 4, 1, 1), torch.empty(1, 256, 32, 32)
    before = torch.get_rng_state()
    with torch.no_grad():
        use = winograd_pays(layer, x)
    assert torch.equal(torch.get_rng_state(), before)
    key = machine_key(torch.device("cpu"))
    entry = json.loads((cache_dir() / "winograd.json").read_text())[key]
    assert entry["direct_ms"] > 0 and entry["winograd_ms"] > 0
    assert entry["speedup"] == pytest.approx(entry["direct_ms"] / entry["winograd_ms"], rel=0.01)
    assert use is entry["use"] is (entry["speedup"] >= winograd.WINOGRAD_MIN_SPEEDUP)
    assert "winograd convolutions in fp32: " in capsys.readouterr().err
    monkeypatch.setattr(winograd, "calibrate_winograd", lambda: pytest.fail("measured twice"))
    assert winograd_pays(layer, x) is use
    for cached in (True, False):
        monkeypatch.setattr(winograd, "_winograd_verdicts", {})
        (cache_dir() / "winograd.json").write_text(json.dumps({key: {"use": cached, "speedup": 1.0}}))
        assert winograd_pays(layer, x) is cached
    monkeypatch.setattr(winograd, "_winograd_verdicts", {})
    (cache_dir() / "winograd.json").write_text(json.dumps({key: {"use": "yes"}}))
    monkeypatch.setattr(
        winograd, "calibrate_winograd", lambda: {"use": False, "speedup": 0.5, "seconds": 0.0}
    )
    assert not winograd_pays(layer, x)
