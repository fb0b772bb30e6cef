"""The attack contract (attacks/base.py), checked for every attack in the registry and each norm it
supports: a new attack registered in ATTACKS gets these checks without new test code."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gankit.attacks import ATTACKS, ImageClassifier
from gankit.attacks.base import NORMS
from gankit.attacks.registry import accepted_options, make_attack
from gankit.errors import GankitError

VARIANTS = [
    (name, norm)
    for name, cls in ATTACKS.items()
    for norm in (NORMS if "norm" in accepted_options(cls) else ("linf",))
]
IDS = [f"{n}-{norm}" for n, norm in VARIANTS]


@pytest.fixture(scope="module")
def model():
    """A small float64 CNN (batch norm, dropout) inside the [0, 1] wrapper, its modules in mixed modes:
    the wrapper in training mode, the network in eval mode except its dropout."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
    ).double()
    with torch.no_grad():
        net(torch.randn(16, 3, 16, 16, dtype=torch.float64))  # batch norm gets running statistics
    clf = ImageClassifier(net, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 16, 3).double()
    clf.train()
    net.eval()
    net[3].train()
    return clf


def images(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, 20, 20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, :, :2] = 0.0  # pixels on the box's edges
    x[:, :, -2:] = 1.0
    return x


def attack(name, norm, model, eps, **kw):
    """A short run of the attack: few iterations (and few queries for score-based search)."""
    return make_attack(name, model, eps, norm=norm, steps=3, queries=20, seed=5, **kw)


@pytest.mark.parametrize("name,norm", VARIANTS, ids=IDS)
def test_ball_and_box(model, name, norm):
    x = images(8)
    for eps in (0.01, 0.1, 1.0):
        adv = attack(name, norm, model, eps)(x)
        assert adv.min() >= 0 and adv.max() <= 1
        d = (adv - x).flatten(1)
        size = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
        assert (size <= eps * (1 + 1e-9)).all()
        assert (size > 0).any()  # it did perturb


@pytest.mark.parametrize("name,norm", VARIANTS, ids=IDS)
def test_eps_zero_returns_the_input_and_the_input_is_never_mutated(model, name, norm):
    x = images(6, seed=1)
    before = x.clone()
    assert torch.equal(attack(name, norm, model, 0.0)(x), x)
    attack(name, norm, model, 0.1).run(x)
    if ATTACKS[name].supports_target:
        attack(name, norm, model, 0.1)(x, target="random")
    else:
        with pytest.raises(GankitError, match="untargeted"):
            attack(name, norm, model, 0.1)(x, target="random")
    assert torch.equal(x, before)


@pytest.mark.parametrize("name,norm", VARIANTS, ids=IDS)
def test_a_sample_alone_equals_the_sample_in_a_batch(model, name, norm):
    x = images(6, seed=2)
    atk = attack(name, norm, model, 0.1)
    batch = atk(x)
    for i in (0, 4):
        assert torch.equal(batch[i : i + 1], atk(x[i : i + 1]))


@pytest.mark.parametrize("name,norm", VARIANTS, ids=IDS)
def test_batch_size_bounds_what_the_model_sees_and_changes_no_result(model, name, norm):
    x = images(7, seed=4)
    whole = attack(name, norm, model, 0.1).run(x)
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        batched = attack(name, norm, model, 0.1, batch_size=3).run(x)
    finally:
        hook.remove()
    assert seen and max(seen) <= 3
    assert torch.equal(batched.adversarial, whole.adversarial)
    assert torch.equal(batched.labels, whole.labels) and torch.equal(batched.adv_pred, whole.adv_pred)
    assert batched.found_by == whole.found_by


@pytest.mark.parametrize("name,norm", VARIANTS, ids=IDS)
def test_every_submodule_gets_its_mode_and_gradients_back(model, name, norm):
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    stats = model.model[1].running_mean.clone()
    attack(name, norm, model, 0.1).run(images(4, seed=3))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.model[1].running_mean, stats)  # no forward pass in training mode
