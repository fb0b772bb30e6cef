"""Building blocks for the translation recipes (Pix2Pix, CycleGAN): U-Net, PatchGAN, paired jitter."""

import pytest
import torch

from gankit.data.pairs import paired_jitter, split_aligned
from gankit.data.transforms import random_flip_shift
from gankit.errors import GankitError
from gankit.nn.patchgan import PatchDiscriminator, receptive_field
from gankit.nn.unet import UNetGenerator, unet_filters


@pytest.mark.parametrize("size,blocks", [(128, 7), (256, 8), (512, 9)])
def test_unet_depth_follows_size_and_keeps_shape(size, blocks):
    g = UNetGenerator(3, 3, size).eval()
    assert len(g.down) == blocks and unet_filters(size)[:4] == [64, 128, 256, 512]
    with torch.no_grad():
        y = g(torch.randn(1, 3, size, size))
    assert y.shape == (1, 3, size, size) and y.abs().max() <= 1
    with pytest.raises(ValueError, match="built for"):
        g(torch.randn(1, 3, size // 2, size // 2))


def test_widths_scale_every_layer_and_the_weight_count():
    assert unet_filters(256, 16) == [16, 32, 64, 128, 128, 128, 128, 128]
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    g8, g64 = UNetGenerator(3, 3, 64, width=8), UNetGenerator(3, 3, 64)
    assert 50 < n(g64) / n(g8) < 64  # conv weights scale with width squared (biases, norms linearly)
    assert g8(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    d8 = PatchDiscriminator(6, width=8)
    assert d8(torch.randn(1, 6, 64, 64)).shape == PatchDiscriminator(6)(torch.randn(1, 6, 64, 64)).shape


def test_unet_seed_details():
    g = UNetGenerator(size=256)
    assert isinstance(g.down[0][1], torch.nn.Identity)  # first down-block without norm
    drops = [m[2].p for m in g.up]
    assert drops[:3] == [0.5, 0.5, 0.5] and set(drops[3:]) == {0.0}
    w = torch.cat([p.flatten() for n, p in g.named_parameters() if n.endswith("weight") and p.ndim == 4])
    assert abs(w.std().item() - 0.02) < 0.002  # N(0, 0.02) init
    with pytest.raises(ValueError, match="power of two"):
        UNetGenerator(size=300)


def test_patchgan_is_70x70_and_conditional():
    d = PatchDiscriminator(6, norm="instance")
    out = d(torch.randn(2, 3, 256, 256), torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)
    assert receptive_field([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)]) == 70
    assert PatchDiscriminator(3)(torch.randn(1, 3, 128, 128)).shape == (1, 1, 14, 14)


def test_paired_jitter_keeps_pairs_aligned_and_draws_per_example():
    torch.manual_seed(0)
    a = torch.rand(16, 3, 64, 64)
    b = 1 - a  # any pixel-wise function of a: stays exact only if both got the same crop and flip
    ja, jb = paired_jitter(a, b, load_size=72, crop=64)
    assert ja.shape == (16, 3, 64, 64) and torch.allclose(jb, 1 - ja, atol=1e-5)
    # per example, not once for the batch: crops/flips differ between examples of identical content
    same = torch.rand(1, 3, 64, 64).expand(16, -1, -1, -1)
    js, _ = paired_jitter(same, same, load_size=72, crop=64)
    assert len({tuple(j.flatten()[:50].tolist()) for j in js}) > 4
    with pytest.raises(ValueError, match="pair shapes differ"):
        paired_jitter(a, b[:, :, :32])


def test_split_aligned_and_odd_width():
    img = torch.arange(2 * 4 * 6).view(2, 4, 6)
    a, b = split_aligned(img)
    assert torch.equal(torch.cat([a, b], -1), img) and a.shape == (2, 4, 3)
    with pytest.raises(GankitError, match="x.png: width 5 is odd"):
        split_aligned(torch.zeros(3, 4, 5), "x.png")


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`img` (C, H, W) moved by (dy, dx) pixels, zero-filled."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_random_shift_on_non_square_images():
    torch.manual_seed(0)
    x = torch.arange(1, 16, dtype=torch.uint8).view(1, 1, 3, 5).expand(32, -1, -1, -1)
    out = random_flip_shift(x, False, 1)
    assert out.shape == x.shape
    moves = []
    for o in out:  # each output is the input moved by one (dy, dx) in [-1, 1]^2, zero-filled
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(o, _shifted(x[0], dy, dx))]
        assert len(found) == 1
        moves += found
    assert len(set(moves)) >= 6  # drawn per sample, not one shift for the batch, and not a no-op
