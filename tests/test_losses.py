"""GAN losses by type and their penalties (gankit.recipes.losses): each loss teaches a generator a
1-D distribution, the penalties have their closed-form values, and bad names are one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gankit import cli
from gankit.errors import GankitError
from gankit.recipes.losses import LOSSES, LazyR1, get_loss, gradient_penalty, zero_centred_penalty


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_moves_the_generator_onto_the_data(name, one_thread):
    # 2-D data (in 1-D a WGAN-GP critic cannot turn its slope round without crossing the penalty's
    # barrier at slope 0, and its generator runs past the data).
    torch.manual_seed(0)
    loss, mean = get_loss(name), torch.tensor([3.0, -2.0])
    g = nn.Linear(2, 2)  # z ~ N(0, I) -> A z + b, from about 3.6 away
    d = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g = torch.optim.Adam(g.parameters(), 0.01, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), 0.01, betas=(0.5, 0.9))
    n_dis = 5 if name == "wgan-gp" else 1  # its critic trained near optimum each step, as the paper does
    for _ in range(600):
        for _ in range(n_dis):
            real = mean + 0.5 * torch.randn(128, 2)
            fake = g(torch.randn(128, 2))
            loss_d = loss.discriminator(d(real), d(fake.detach()))
            gp = loss.penalty(d, real, fake)
            opt_d.zero_grad()
            (loss_d if gp is None else loss_d + gp).backward()
            opt_d.step()
        opt_g.zero_grad()
        loss.generator(d(g(torch.randn(128, 2)))).backward()
        opt_g.step()
    with torch.no_grad():
        x = g(torch.randn(4000, 2))
    assert (x.mean(0) - mean).norm() < 0.3, (name, x.mean(0))
    assert (gp is not None) == (name == "wgan-gp")


def test_the_losses_have_their_published_values():
    real, fake = torch.tensor([2.0, -0.5]), torch.tensor([0.5, -3.0])
    hinge = get_loss("hinge")
    assert hinge.discriminator(real, fake).item() == pytest.approx((0 + 1.5) / 2 + (1.5 + 0) / 2)
    assert hinge.generator(fake).item() == pytest.approx(1.25)
    ls = get_loss("lsgan")
    assert ls.discriminator(real, fake).item() == pytest.approx((1 + 2.25) / 2 + (0.25 + 9) / 2)
    assert ls.generator(fake).item() == pytest.approx((0.25 + 16) / 2)
    w = get_loss("wgan-gp")
    assert w.discriminator(real, fake).item() == pytest.approx(-1.25 - 0.75)
    bce = get_loss("bce")
    assert bce.generator(fake).item() == pytest.approx(nn.functional.softplus(-fake).mean().item())


def test_penalties_have_their_closed_forms():
    x = torch.randn(5, 3)
    w = torch.tensor([[2.0, 0.0, 0.0]])  # D(x) = w . x: |grad| = 2 everywhere
    linear = lambda t: t @ w.t()  # noqa: E731
    assert gradient_penalty(linear, x.clone().requires_grad_(True), 1.0).item() == pytest.approx(1.0)
    square = lambda t: (t**2).sum(1, keepdim=True)  # noqa: E731  grad 2x
    r1 = zero_centred_penalty(square, x)
    assert r1.item() == pytest.approx((2 * x).pow(2).sum(1).mean().item(), rel=1e-5)
    lazy = LazyR1(gamma=0.5, every=4)
    assert [s for s in range(9) if lazy.due(s)] == [0, 4, 8] and not LazyR1(0.0).due(0)
    assert lazy(square, x).item() == pytest.approx(0.25 * 4 * r1.item(), rel=1e-5)
    # WGAN-GP's own penalty: 10 x (|grad| - 1)^2 on interpolates.
    assert get_loss("wgan-gp").penalty(linear, x, x + 1).item() == pytest.approx(10.0)
    # Its graph reaches the discriminator's weights (it is part of D's loss).
    d = nn.Linear(3, 1)
    gradient_penalty(d, x.clone().requires_grad_(True), 1.0).backward()
    assert d.weight.grad is not None and d.weight.grad.abs().sum() > 0


def test_bad_names_and_weights_are_one_line_errors(capsys):
    with pytest.raises(GankitError, match="--gan-loss 'wgan'"):
        get_loss("wgan")
    with pytest.raises(GankitError, match="--r1 -1"):
        LazyR1(-1.0)
    assert cli.main(["train", "dcgan", "--gan-loss", "wgan", "--out", "never"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gan-loss" in err[0] and "hinge" in err[0]
