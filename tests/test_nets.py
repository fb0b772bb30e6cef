import pytest
import torch
import torch.nn.functional as F

from gankit import cpu
from gankit.cpu.dropout import fast_dropout
from gankit.nn.cdcgan import ProjectionDiscriminator
from gankit.nn.dcgan import PaperDiscriminator, SeedDiscriminator, SeedGenerator, build_dcgan
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
    if channels_last:  # as the recipes run them: prepared for the CPU paths, channels-last
        d, x = cpu.prepare(d), x.contiguous(memory_format=torch.channels_last)
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
