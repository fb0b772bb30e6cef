"""DiffAugment: each policy does what the paper's does, per sample, differentiably."""

import pytest
import torch

from gankit.nn.diffaugment import DEFAULT_POLICY, diff_augment, parse_policy


def ramp(n=16, c=3, s=32):
    """Images in [-1, 1] whose every pixel is distinct: shifts are recoverable exactly."""
    x = torch.linspace(-1, 1, c * s * s).view(1, c, s, s).repeat(n, 1, 1, 1)
    return x + torch.arange(n).view(n, 1, 1, 1) * 1e-3


def test_policy_parsing():
    assert parse_policy(DEFAULT_POLICY) == ("color", "translation", "cutout")
    assert parse_policy("none") == parse_policy("") == parse_policy(None) == ()
    assert parse_policy(" cutout , color,cutout") == ("cutout", "color")
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("color,flip")


def test_translation_is_a_per_sample_integer_shift_with_zero_fill():
    torch.manual_seed(0)
    x = ramp()
    y = diff_augment(x, ("translation",))
    assert y.shape == x.shape
    s, limit = x.shape[-1], round(32 * 0.125)
    shifts = set()
    for xi, yi in zip(x, y):
        found = None
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                ref = torch.zeros_like(xi)
                ys, xs = slice(max(dy, 0), s + min(dy, 0)), slice(max(dx, 0), s + min(dx, 0))
                src_y, src_x = slice(max(-dy, 0), s + min(-dy, 0)), slice(max(-dx, 0), s + min(-dx, 0))
                ref[:, ys, xs] = xi[:, src_y, src_x]
                if torch.equal(ref, yi):
                    found = (dy, dx)
        assert found is not None, "not a shift within 1/8 of the side"
        shifts.add(found)
    assert len(shifts) > 4  # drawn per sample, not once per batch


def test_cutout_zeroes_one_square_of_at_most_half_the_side():
    torch.manual_seed(1)
    x = ramp() + 2.0  # no pixel is zero before the cutout
    y = diff_augment(x, ("cutout",))
    for xi, yi in zip(x, y):
        hole = (yi == 0).all(0)
        rows, cols = hole.any(1).nonzero(), hole.any(0).nonzero()
        assert 0 < hole.sum() <= 16 * 16
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert hole.sum() == h * w  # one rectangle (clipped at the border), the rest untouched
        assert torch.equal(yi[:, ~hole], xi[:, ~hole])
    assert len({int((yi == 0).all(0).nonzero()[0, 0]) for yi in y}) > 2  # per-sample positions


def test_color_keeps_channel_structure_and_varies_per_sample():
    torch.manual_seed(2)
    x = torch.rand(64, 3, 8, 8) * 2 - 1
    y = diff_augment(x, ("color",))
    assert y.shape == x.shape and torch.isfinite(y).all()
    shift = (y - x).mean(dim=(1, 2, 3))
    assert shift.std() > 0.05  # brightness differs between samples
    gray = x.mean(1, keepdim=True).expand_as(x).contiguous()
    g = diff_augment(gray, ("color",))
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])  # gray stays gray


def test_channel_groups_move_together_but_take_colour_apart():
    torch.manual_seed(3)
    x = ramp(8, 3, 16)
    pair = torch.cat([x, x], 1)
    y = diff_augment(pair, ("translation", "cutout"), groups=(3, 3))
    assert torch.equal(y[:, :3], y[:, 3:])  # input and target shifted and cut alike
    a = torch.cat([x, 10 * x], 1)
    c = diff_augment(a, ("color",), groups=(3, 3))
    assert (c[:, :3] - x).abs().max() < 3  # the second image's scale did not leak into the first
    with pytest.raises(ValueError, match="do not add up"):
        diff_augment(pair, ("color",), groups=(3, 2))


def test_gradients_flow_to_every_uncut_pixel_and_seeds_repeat():
    x = ramp(4, 1, 16).requires_grad_(True)
    torch.manual_seed(4)
    y = diff_augment(x, parse_policy(DEFAULT_POLICY))
    y.sum().backward()
    assert x.grad is not None and (x.grad != 0).any()
    torch.manual_seed(4)
    again = diff_augment(x.detach(), parse_policy(DEFAULT_POLICY))
    assert torch.equal(y.detach(), again)
    assert diff_augment(x, ()) is x  # off: the very same tensor, no copy


def test_channels_last_in_channels_last_out():
    x = ramp(4, 3, 16).contiguous(memory_format=torch.channels_last)
    y = diff_augment(x, parse_policy(DEFAULT_POLICY))
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("recipe", ["dcgan", "cdcgan"])
def test_auto_turns_it_on_where_it_was_measured_to_pay(recipe):
    """--diffaugment auto: on for a small set trained on long enough for the discriminator to memorise
    it (DCGAN's measured thresholds, in real images shown: 300,000 at 64 px, 1.5 million at 28/32 px),
    off otherwise."""
    from gankit.recipes import get_recipe

    cls = get_recipe(recipe)

    def resolved(count, **options):
        cfg = cls.Config(**{"diffaugment": "auto", "batch_size": 64, **options})
        note = cls.resolve_diffaugment(cfg, count)
        return cfg.diffaugment, note

    policy, note = resolved(1000, image_size=64, epochs=400)
    assert policy == "color,translation,cutout"
    assert "1000 training images" in note and "~400 times" in note and "--diffaugment none" in note
    assert resolved(1000, image_size=64, epochs=200) == ("none", None)  # the seed's 200 epochs: too short
    assert resolved(20_000, image_size=64, epochs=400) == ("none", None)  # not a small set
    assert resolved(1000, image_size=64, epochs=1000, max_steps=3000)[0] == "none"  # 192 passes
    assert resolved(1000, image_size=64, epochs=1000, max_steps=6000)[0] == "color,translation,cutout"
    # 5,000 images: the same count of images shown, a fifth of the passes (measured: level at 51
    # passes, ahead from 77)
    policy, note = resolved(5000, image_size=64, epochs=1000, max_steps=6000)  # 77 passes
    assert policy == "color,translation,cutout" and "~77 times" in note and "from 60 on" in note
    assert resolved(5000, image_size=64, epochs=1000, max_steps=4000)[0] == "none"  # 51 passes
    assert resolved(1000, image_size=28, epochs=1000) == ("none", None)
    assert resolved(1000, image_size=28, epochs=2000)[0] == "translation"
    assert resolved(1000, image_size=32, epochs=2000)[0] == "translation"
    assert resolved(1000, image_size=64, epochs=400, diffaugment="none") == ("none", None)  # asked for
