import copy

import pytest
import torch
import torch.nn.functional as F

from gankit.nn.cdcgan import ProjectionDiscriminator
from gankit.nn.dcgan import PaperDiscriminator, SeedDiscriminator, SeedGenerator, build_dcgan
from gankit.nn.layers import Conv2d, ConvTranspose2d, fast_dropout
from gankit.nn.ssgan import SharedDiscriminator


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 1), (32, 3), (64, 3), (64, 1)])
def test_dcgan_shapes_and_ranges(size, channels):
    g, d = build_dcgan(size, channels, 100)
    z = torch.randn(5, 100)
    x = g(z)
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (5, 1)


def test_seed_generator_matches_the_seed_architecture():
    g = SeedGenerator()
    assert g.fc.weight.shape == (7 * 7 * 256, 100) and g.fc.bias is None
    assert [m.out_channels for m in (g.up1, g.up2, g.up3)] == [128, 64, 1]
    assert [m.kernel_size for m in (g.up1, g.up2, g.up3)] == [(5, 5)] * 3
    assert [m.stride for m in (g.up1, g.up2, g.up3)] == [(1, 1), (2, 2), (2, 2)]
    d = SeedDiscriminator()
    assert (d.conv1.out_channels, d.conv2.out_channels, d.fc.in_features) == (64, 128, 7 * 7 * 128)
    assert d.drop.p == 0.3


def test_discriminator_dropout_only_in_training():
    d = SeedDiscriminator()
    x = torch.randn(4, 1, 28, 28)
    d.eval()
    assert torch.equal(d(x), d(x))
    d.train()
    assert not torch.equal(d(x), d(x))


def test_fast_dropout_rate_scale_and_gradient():
    x = torch.ones(1000, 1000, requires_grad=True)
    y = fast_dropout(x, 0.3, True)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.003
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient is the same mask and scale
    assert fast_dropout(x, 0.3, False) is x
    torch.manual_seed(1)
    a = fast_dropout(torch.ones(100), 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(a, fast_dropout(torch.ones(100), 0.5, True))  # driven by the seeded RNG


def test_fast_dropout_keeps_a_channels_last_layout_and_drops_each_channel_alike():
    x = torch.ones(64, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    y = fast_dropout(x, 0.3, True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    kept = (y != 0).float().mean(dim=(0, 2, 3))  # 1,600 draws per channel
    assert ((kept - 0.7).abs() < 0.05).all(), kept


def _chw_logits(d, x):
    """The logits as computed before features were flattened in H, W, C order (flatten(1))."""
    if isinstance(d, SeedDiscriminator):
        h = F.leaky_relu(d.conv2(F.leaky_relu(d.conv1(x), 0.2)), 0.2)
        return d.fc(h.flatten(1))
    if isinstance(d, PaperDiscriminator):
        return d.net(x).flatten(1)
    h = x
    for conv in d.convs:
        h = F.leaky_relu(conv(h), 0.2)
    return d.head(h.flatten(1))


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: SeedDiscriminator(1, 28), (3, 1, 28, 28)),
        (lambda: PaperDiscriminator(3), (3, 3, 64, 64)),
        (lambda: SharedDiscriminator(weight_norm=True), (3, 1, 28, 28)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_heads_read_hwc_features_with_weights_stored_as_before(make, shape, channels_last):
    torch.manual_seed(0)
    d = make().eval()
    x = torch.randn(shape)
    if channels_last:
        d, x = d.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out = d(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert torch.allclose(logits, _chw_logits(d, x), atol=1e-5)  # old checkpoints give the same logits


def test_projection_term_reads_the_embedding_in_feature_order():
    torch.manual_seed(0)
    d = ProjectionDiscriminator(10, 1, 28).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 3, 9])
    h = F.leaky_relu(d.net.conv2(F.leaky_relu(d.net.conv1(x), 0.2)), 0.2).flatten(1)
    expected = d.net.fc(h) + (d.embed(y) * h).sum(1, keepdim=True)
    assert torch.allclose(d(x, y), expected, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_instance_norm_gradients_do_not_depend_on_the_memory_layout(batch):
    """torch 2.13's CPU instance norm gets a single image's gradient wrong when the incoming gradient
    is channels-last; gankit's layer (used by every 'instance' network) hands it a contiguous one."""
    from gankit.nn.unet import norm_layer

    torch.manual_seed(0)
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 1, 1), norm_layer("instance", 8), torch.nn.Conv2d(8, 3, 3)
    )
    cl = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 16, 16)

    def grads(net, inp):
        net.zero_grad(set_to_none=True)
        net(inp).square().mean().backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    a, b = grads(ref, x), grads(cl, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


@pytest.mark.parametrize("batch", [1, 3])
def test_instance_norm_equals_torchs_in_float64_and_stays_channels_last(batch):
    from gankit.nn.layers import InstanceNorm2d

    torch.manual_seed(0)
    ours = InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref = torch.nn.InstanceNorm2d(6, affine=True).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 6, 9, 7, dtype=torch.float64) * 3 + 1
    g = torch.randn_like(x)
    xr = x.clone().requires_grad_()
    ref(xr).backward(g)  # float64, NCHW: torch's kernel is right there
    xc = x.float().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ours(xc)
    y.backward(g.float().contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y.double(), ref(x).detach(), atol=1e-5)
    assert torch.allclose(xc.grad.double(), xr.grad, atol=1e-5)
    assert torch.allclose(ours.weight.grad.double(), ref.weight.grad, atol=1e-4)
    assert torch.allclose(ours.bias.grad.double(), ref.bias.grad, atol=1e-4)


@pytest.mark.parametrize("out_channels,kernel", [(1, 7), (3, 7), (3, 3)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_narrow_conv_equals_conv2d(out_channels, kernel, precision):
    """NarrowConv2d (GEMM + col2im on CPU) computes what nn.Conv2d computes, gradients included
    (a map that is not square, so that rows and columns cannot be swapped unseen)."""
    from gankit.nn.layers import NarrowConv2d

    torch.manual_seed(0)
    ref = torch.nn.Conv2d(16, out_channels, kernel, 1, kernel // 2)
    fast = NarrowConv2d(16, out_channels, kernel, 1, kernel // 2)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 16, 12, 9).contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, out_channels, 12, 9)
    outs = []
    for net in (ref, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = net(xi)
        (y.float() * g).sum().backward()
        outs.append((y.float(), xi.grad, net.weight.grad, net.bias.grad))
    tol = 1e-4 if precision == "fp32" else 5e-2
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=tol, atol=tol * float(a.detach().abs().max())), (a - b).abs().max()
    assert outs[1][1].is_contiguous(memory_format=torch.channels_last)  # the next layer's layout
    # a first layer (input without gradient) and a frozen layer (weight without gradient)
    fast.zero_grad()
    fast(x).square().sum().backward()
    ref_grad = torch.autograd.grad(ref(x).square().sum(), ref.weight)[0]
    assert torch.allclose(fast.weight.grad, ref_grad, atol=1e-3)
    fast.requires_grad_(False)
    xi = x.clone().requires_grad_()
    fast(xi).square().sum().backward()
    xr = x.clone().requires_grad_()
    ref(xr).square().sum().backward()
    assert torch.allclose(xi.grad, xr.grad, atol=1e-4)


@pytest.mark.parametrize("kernel,output_padding", [(4, 0), (3, 1)])
def test_conv_transpose_with_the_bias_added_after_equals_the_stock_layer(kernel, output_padding):
    torch.manual_seed(0)
    ours = ConvTranspose2d(8, 5, kernel, 2, 1, output_padding=output_padding)
    stock = torch.nn.ConvTranspose2d(8, 5, kernel, 2, 1, output_padding=output_padding)
    stock.load_state_dict(ours.state_dict())  # same parameters, same keys
    x = torch.randn(3, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_ref = ours(x), stock(x)
    assert torch.allclose(y, y_ref, atol=1e-6)
    grads = torch.autograd.grad(y.square().sum(), [x, ours.weight, ours.bias])
    ref = torch.autograd.grad(y_ref.square().sum(), [x, stock.weight, stock.bias])
    for g, r in zip(grads, ref):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-4)
    if output_padding == 0:  # output_size picks the output padding as in torch
        assert ours(x, output_size=[13, 13]).shape == stock(x, output_size=[13, 13]).shape == (3, 5, 13, 13)


@pytest.mark.parametrize(
    "ours,stock,shape",
    [
        (
            lambda: Conv2d(16, 8, 4, 2, 1, bias=False),
            lambda: torch.nn.Conv2d(16, 8, 4, 2, 1, bias=False),
            (2, 16, 8, 8),
        ),
        (lambda: Conv2d(16, 8, 4, 2, 1), lambda: torch.nn.Conv2d(16, 8, 4, 2, 1), (1, 16, 2, 2)),
        (lambda: Conv2d(16, 8, 3, 1, 1), lambda: torch.nn.Conv2d(16, 8, 3, 1, 1), (3, 16, 5, 7)),
        (
            lambda: ConvTranspose2d(16, 8, 4, 2, 1),
            lambda: torch.nn.ConvTranspose2d(16, 8, 4, 2, 1),
            (2, 16, 1, 1),
        ),
        (
            lambda: ConvTranspose2d(16, 8, 3, 2, 1, output_padding=1, bias=False),
            lambda: torch.nn.ConvTranspose2d(16, 8, 3, 2, 1, output_padding=1, bias=False),
            (2, 16, 3, 5),
        ),
    ],
)
def test_small_map_layers_run_as_gemm_and_equal_the_stock_layers(ours, stock, shape):
    """Batches of at most SMALL_MAP_PIXELS pixels (N x H x W) take the GEMM + im2col/col2im path on CPU."""
    from gankit.nn.layers import _small_map

    torch.manual_seed(0)
    a, b = ours(), stock()
    assert _small_map(a, torch.empty(shape)) and not _small_map(a, torch.empty(100, shape[1], 7, 7))
    b.load_state_dict(a.state_dict())  # same parameters, same keys
    a, b = a.to(memory_format=torch.channels_last), b.to(memory_format=torch.channels_last)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_ref = a(x), b(x)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y_ref)
    for got, want in zip(
        torch.autograd.grad(y, [x, *a.parameters()], g), torch.autograd.grad(y_ref, [x, *b.parameters()], g)
    ):
        assert torch.allclose(got, want, atol=1e-4)
    with torch.autocast("cpu", torch.bfloat16):
        yb, yb_ref = a(x), b(x)
    assert yb.dtype == yb_ref.dtype == torch.bfloat16
    assert (yb.float() - yb_ref.float()).abs().max() <= 1e-2 * yb_ref.float().abs().max()


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: Conv2d(512, 512, 4, 2, 1), (64, 512, 2, 2)),
        (lambda: ConvTranspose2d(1024, 512, 4, 2, 1, bias=False), (16, 1024, 4, 4)),
    ],
)
def test_wide_layers_on_small_maps_take_the_gemm_path_in_fp32_only(make, shape, monkeypatch):
    """Above SMALL_MAP_PIXELS, wide layers on maps of at most 4x4 px still run as GEMM in fp32 (the U-Net's
    512-channel inner layers at batches of 9-128), equal to torch's layer; not under bf16 autocast, not on
    larger maps, not on narrow layers, not on larger batches; and only where the machine's calibration
    says so (here forced by its variable)."""
    from gankit.nn.fastconv import SMALL_MAP_WIDE_ENV
    from gankit.nn.layers import SMALL_MAP_PIXELS, _small_map

    monkeypatch.setenv(SMALL_MAP_WIDE_ENV, "0")
    assert not _small_map(make(), torch.empty(shape))
    monkeypatch.setenv(SMALL_MAP_WIDE_ENV, "1")

    torch.manual_seed(0)
    a = make().to(memory_format=torch.channels_last)
    n, c, h, w = shape
    assert n * h * w > SMALL_MAP_PIXELS and _small_map(a, torch.empty(shape))
    with torch.autocast("cpu", torch.bfloat16):
        assert not _small_map(a, torch.empty(shape))
    assert not _small_map(a, torch.empty(3, c, 8, 8)) and not _small_map(a, torch.empty(8 * n, c, h, w))
    assert not _small_map(Conv2d(64, 64, 4, 2, 1), torch.empty(64, 64, 2, 2))  # 65 K weights: oneDNN
    stock = (torch.nn.ConvTranspose2d if isinstance(a, ConvTranspose2d) else torch.nn.Conv2d)(
        a.in_channels, a.out_channels, 4, 2, 1, bias=a.bias is not None
    )
    stock.load_state_dict(a.state_dict())
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_ref = a(x), stock.to(memory_format=torch.channels_last)(x)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    scale = y_ref.abs().max()
    assert (y - y_ref).abs().max() <= 1e-5 * scale
    g = torch.randn_like(y_ref)
    for got, want in zip(
        torch.autograd.grad(y, [x, a.weight], g), torch.autograd.grad(y_ref, [x, stock.weight], g)
    ):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


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
    """A stride-1 transposed convolution as products of spectra (DFTs as matrices): same output and
    gradients as torch's, to fp32 rounding, in either input layout, for any padding below the kernel."""
    from gankit.nn.layers import frequency_conv_transpose2d

    torch.manual_seed(0)
    n, h, w = shape
    x = torch.randn(n, c_in, h, w)
    x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
    weight = torch.randn(c_in, c_out, kernel, kernel, requires_grad=True)
    y = frequency_conv_transpose2d(x, weight, (padding, padding))
    y_ref = torch.nn.functional.conv_transpose2d(x, weight, None, 1, padding)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y - y_ref).abs().max() <= 1e-5 * y_ref.abs().max()
    g = torch.randn_like(y_ref)
    for got, want in zip(torch.autograd.grad(y, [x, weight], g), torch.autograd.grad(y_ref, [x, weight], g)):
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_frequency_domain_transposed_conv_in_bf16_is_as_close_as_the_direct_bf16_kernel():
    """In bf16 (every GEMM reading bf16) the frequency path's output and gradients stay within 2x the
    error of oneDNN's direct bf16 kernel (measured: 1.48x, 4.3e-3 of the norm), both against fp32."""
    from gankit.nn.layers import frequency_conv_transpose2d

    torch.manual_seed(0)
    x = torch.randn(64, 256, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = (0.02 * torch.randn(256, 128, 5, 5)).requires_grad_()
    g = torch.randn(64, 128, 7, 7)

    def outputs(conv, dtype):
        y = conv(x.to(dtype), weight.to(dtype), (2, 2))
        return [y.float(), *(t.float() for t in torch.autograd.grad(y, [x, weight], g.to(dtype)))], y.dtype

    def direct(x, w, padding):
        return torch.nn.functional.conv_transpose2d(x, w, None, 1, padding)

    exact, _ = outputs(direct, torch.float32)
    ours, dtype = outputs(frequency_conv_transpose2d, torch.bfloat16)
    onednn, _ = outputs(direct, torch.bfloat16)
    assert dtype == torch.bfloat16
    for got, ref, want in zip(ours, onednn, exact):
        error = ((got - want).norm() / want.norm()).item()
        assert 0 < error <= 2 * ((ref - want).norm() / want.norm()).item() and error < 1e-2


def test_frequency_domain_path_is_taken_where_it_pays_and_can_be_turned_off(monkeypatch):
    """DCGAN's 256 -> 128, 5x5 layer at 7 px runs in the frequency domain in fp32 at the seed's batch
    (512) and under bf16 autocast from batch ~24 (the demo's 64), with its bias and gradients as the
    stock layer's; the direct convolution runs at fp32 batch 64, bf16 batch 16, for 3x3 kernels, on
    larger maps, under fp16 autocast and with GANKIT_FREQUENCY_CONV=0."""
    from gankit.nn.dcgan import SeedGenerator
    from gankit.nn.layers import FREQUENCY_CONV_ENV, _frequency_domain_pays

    layer, x = SeedGenerator().up1, torch.empty(512, 256, 7, 7)
    assert _frequency_domain_pays(layer, x, [0, 0])
    assert not _frequency_domain_pays(layer, x[:64], [0, 0])
    assert not _frequency_domain_pays(layer, torch.empty(512, 256, 32, 32), [0, 0])
    assert not _frequency_domain_pays(ConvTranspose2d(256, 128, 3, 1, 1), x, [0, 0])
    with torch.autocast("cpu", torch.bfloat16):
        assert _frequency_domain_pays(layer, x[:64], [0, 0])
        assert not _frequency_domain_pays(layer, x[:16], [0, 0])
    with torch.autocast("cpu", torch.float16):
        assert not _frequency_domain_pays(layer, x, [0, 0])
    assert not _frequency_domain_pays(layer, x.bfloat16(), [0, 0])  # bf16 input, fp32 weight
    monkeypatch.setenv(FREQUENCY_CONV_ENV, "0")
    assert not _frequency_domain_pays(layer, x, [0, 0])
    with torch.autocast("cpu", torch.bfloat16):
        assert not _frequency_domain_pays(layer, x, [0, 0])
    monkeypatch.delenv(FREQUENCY_CONV_ENV)

    torch.manual_seed(0)  # under bf16 autocast the layer returns bf16 and fp32 parameter gradients
    ours = ConvTranspose2d(256, 128, 5, 1, 2).to(memory_format=torch.channels_last)
    xb = torch.randn(64, 256, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        y = ours(xb)
    y.float().square().sum().backward()
    assert y.dtype == torch.bfloat16 and xb.grad.dtype == ours.weight.grad.dtype == torch.float32
    assert ours.bias.grad is not None

    torch.manual_seed(0)
    ours = ConvTranspose2d(256, 128, 5, 1, 2).to(memory_format=torch.channels_last)
    stock = torch.nn.ConvTranspose2d(256, 128, 5, 1, 2)
    stock.load_state_dict(ours.state_dict())  # same parameters, same keys
    x = torch.randn(160, 256, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _frequency_domain_pays(ours, x, [0, 0])
    y, y_ref = ours(x), stock(x)
    assert (y - y_ref).abs().max() <= 1e-5 * y_ref.abs().max()
    g = torch.randn_like(y_ref)
    for got, want in zip(
        torch.autograd.grad(y, [x, *ours.parameters()], g),
        torch.autograd.grad(y_ref, [x, *stock.parameters()], g),
    ):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_frequency_domain_path_is_measured_once_per_machine_and_cached(monkeypatch, capsys):
    """Unforced, the path is timed against the direct kernel the first time a layer qualifies in a
    dtype, for that dtype only; the crossover it measured is cached per machine and dtype (and kept in
    the process) and moves the rule to it; a cached factor is obeyed without timing."""
    import json

    from gankit.data.download import cache_dir
    from gankit.device import machine_key
    from gankit.nn import layers

    monkeypatch.delenv(layers.FREQUENCY_CONV_ENV)
    monkeypatch.setattr(layers, "_frequency_verdicts", {})
    layer, x = ConvTranspose2d(256, 128, 5, 1, 2), torch.empty(512, 256, 7, 7)
    before = torch.get_rng_state()
    with torch.no_grad():  # as when sampling: the measurement still runs forward and backward
        use = layers._frequency_domain_pays(layer, x, [0, 0])
    assert torch.equal(torch.get_rng_state(), before)
    key = machine_key(torch.device("cpu"))
    cache = json.loads((cache_dir() / "frequency_conv.json").read_text())
    assert list(cache) == [f"{key}|fp32"]  # bf16, which no layer has computed in, is not measured
    e = cache[f"{key}|fp32"]
    assert e["direct_ms"] > e["small_direct_ms"] > 0 and e["frequency_ms"] > e["small_frequency_ms"] > 0
    points = [(32, e["small_direct_ms"], e["small_frequency_ms"]), (256, e["direct_ms"], e["frequency_ms"])]
    crossover = layers._crossover_batch(points, layers.FREQUENCY_MIN_SPEEDUP)
    assert e["crossover_batch"] == (None if crossover is None else pytest.approx(crossover, abs=0.1))
    if crossover is not None and crossover < 500:  # the rule puts the crossover where it was measured
        for n, side in ((int(crossover) + 2, True), (int(crossover) - 2, False)):
            assert n < 1 or layers._frequency_domain_pays(layer, x[:n], [0, 0]) is side
    assert use is (e["factor"] > 0 and (crossover or 1e9) < 512)
    assert "frequency-domain convolutions in fp32: " in capsys.readouterr().err
    monkeypatch.setattr(layers, "calibrate_frequency_conv", lambda dtypes: pytest.fail("measured twice"))
    assert layers._frequency_domain_pays(layer, x, [0, 0]) is use  # the process keeps its factor
    measured = []

    def bf16_only(dtypes):
        measured.extend(dtypes)
        return {"bf16": {"factor": 0.0, "crossover_batch": None, "speedup": 0.9, "batch": 64, "seconds": 0.0}}

    monkeypatch.setattr(layers, "calibrate_frequency_conv", bf16_only)
    with torch.autocast("cpu", torch.bfloat16):
        assert not layers._frequency_domain_pays(layer, x, [0, 0])  # never pays in bf16 here
    assert measured == ["bf16"]  # the other dtype, on its first use only
    monkeypatch.setattr(layers, "_frequency_verdicts", {})
    factors = {f"{key}|fp32": {"factor": 0.0}, f"{key}|bf16": {"factor": 4.0}}
    (cache_dir() / "frequency_conv.json").write_text(json.dumps(factors))
    assert not layers._frequency_domain_pays(layer, x, [0, 0])  # the cache is obeyed
    with torch.autocast("cpu", torch.bfloat16):
        assert layers._frequency_domain_pays(layer, x, [0, 0])  # per dtype: bf16 at 512 with factor 4
        assert not layers._frequency_domain_pays(layer, x[:64], [0, 0])  # ... not at 64
    fresh = {"fp32": {"factor": 4.0, "crossover_batch": 128.0, "speedup": 1.2, "batch": 256, "seconds": 0.0}}
    monkeypatch.setattr(layers, "calibrate_frequency_conv", lambda dtypes: fresh)
    for stale in ({"use": True, "speedup": 1.3}, {"factor": None}):  # an older version's entry, a damaged one
        monkeypatch.setattr(layers, "_frequency_verdicts", {})  # measured again
        (cache_dir() / "frequency_conv.json").write_text(json.dumps({f"{key}|fp32": stale}))
        assert layers._frequency_domain_pays(layer, x, [0, 0])


def test_the_crossover_batch_is_where_the_two_lines_meet():
    from gankit.nn.layers import _crossover_batch

    # direct 2 ms an image; frequency 20 ms once + 1 ms an image: 2b = 1.1 (20 + b) at b = 22 / 0.9
    assert _crossover_batch([(16, 0.032, 0.036), (64, 0.128, 0.084)], 1.1) == pytest.approx(22 / 0.9)
    assert _crossover_batch([(16, 0.032, 0.008), (64, 0.128, 0.032)], 1.1) == 1.0  # faster at any batch
    assert _crossover_batch([(16, 0.032, 0.036), (64, 0.128, 0.125)], 1.1) is None  # never 1.1x per image
