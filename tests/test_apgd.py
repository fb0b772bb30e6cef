"""APGD against the paper (checkpoints, DLR loss) and against torchattacks 3.5.1's implementation of the
reference code: from the same random start, the same images are fooled and the same adversarial
images come out."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gankit.attacks import APGD, PGD, ImageClassifier
from gankit.attacks.apgd import checkpoints, dlr_loss
from gankit.attacks.base import per_sample_rand


def test_checkpoints_are_the_paper_s():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10] and checkpoints(1) == [1]


def test_dlr_is_invariant_to_shifts_and_scales_of_the_logits():
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y, t = torch.arange(6), (torch.arange(6) + 3) % 10
    for loss in (dlr_loss(z, y), dlr_loss(z, y, t)):
        assert loss.shape == (6,)
    assert torch.allclose(dlr_loss(3.7 * z - 2.0, y), dlr_loss(z, y), atol=1e-5)
    assert torch.allclose(dlr_loss(3.7 * z - 2.0, y, t), dlr_loss(z, y, t), atol=1e-5)
    correct = z.argmax(1)
    assert (dlr_loss(z, correct) < 0).all()  # classified correctly: negative (the margin, rescaled)


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.4
    y = torch.randint(0, 4, (n,), generator=g)
    for i, q in enumerate(y.tolist()):
        r, c = divmod(q, 2)
        x[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 0.45
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def toy():
    """A 4-class MLP trained to 100% on quadrant images; at eps 0.2 about 40% of them can be fooled."""
    torch.manual_seed(0)
    x, y = _data(1024, 0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    clf = ImageClassifier(net, [0.0], [1.0], None, 1).eval()
    xt, yt = _data(200, 1)
    assert (clf(xt).argmax(1) == yt).all()
    return clf, xt, yt


def _robust(clf, adv, y) -> float:
    with torch.no_grad():
        return (clf(adv).argmax(1) == y).float().mean().item()


def test_apgd_is_at_least_as_strong_as_pgd(toy):
    clf, x, y = toy
    pgd = _robust(clf, PGD(clf, 0.2, steps=10)(x, y), y)
    for loss in ("ce", "dlr"):
        apgd = _robust(clf, APGD(clf, 0.2, steps=100, loss=loss, restarts=2)(x, y), y)
        assert 0.2 < apgd <= pgd < 0.9, (loss, apgd, pgd)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_same_as_torchattacks_apgd_from_the_same_start(toy, monkeypatch, loss, norm):
    torchattacks = pytest.importorskip("torchattacks")
    import torchattacks.attacks.apgd as ta_apgd

    clf, x, y = toy
    eps = 0.2 if norm == "linf" else 1.0
    start = per_sample_rand(x, 0, "uniform" if norm == "linf" else "normal")  # APGD's first start

    class SameStart:  # torchattacks draws its start with torch.rand / torch.randn of the batch's shape
        def __getattr__(self, name):
            return getattr(torch, name)

        def rand(self, *shape, **kw):
            return (start + 1) / 2

        def randn(self, *shape, **kw):
            return start.clone()

    monkeypatch.setattr(ta_apgd, "torch", SameStart())
    ours = APGD(clf, eps, steps=100, norm=norm, loss=loss, seed=0)(x, y)
    theirs = torchattacks.APGD(
        clf, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=100, n_restarts=1, seed=0, loss=loss
    )(x, y)
    with torch.no_grad():
        fooled_ours, fooled_theirs = clf(ours).argmax(1) != y, clf(theirs).argmax(1) != y
    assert torch.equal(fooled_ours, fooled_theirs) and 0 < fooled_ours.sum() < len(y)
    # the fooled images are the same points (torchattacks returns the clean image for the others)
    # (L2: the two compute the gradient's norm in a different order; its rounding, amplified over 100
    # steps, stays under 1e-4, where a different algorithm would move pixels by eps's order)
    assert torch.allclose(ours[fooled_ours], theirs[fooled_ours], atol=1e-4)
