"""SNGAN and its conditional twin: the networks' shapes at every size, spectral normalisation that
holds each layer's largest singular value at one, n-dis discriminator steps per generator step,
separate learning rates, and bad options as one-line errors. (Resume, export, DDP and the rest: the
recipe contract tests.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gankit import api, cli
from gankit.nn.sngan import ResNetDiscriminator, ResNetGenerator

TINY = dict(data="mnist", batch_size=16, ngf=16, ndf=16, precision="fp32", device="cpu", ema=0.0)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("classes", [0, 10])
def test_networks_map_noise_to_images_and_images_to_one_logit(size, channels, classes):
    g = ResNetGenerator(32, channels, size, 32, classes).eval()
    d = ResNetDiscriminator(channels, size, 16, classes).eval()
    y = torch.arange(3) if classes else None
    with torch.no_grad():
        x = g(torch.randn(3, 32), y)
        assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
        assert d(x, y).shape == (3, 1)
        if classes:  # the class changes the image and the logit
            other = torch.tensor([5, 6, 7])
            assert not torch.allclose(g(torch.zeros(3, 32), y), g(torch.zeros(3, 32), other))
            assert not torch.allclose(d(x, y), d(x, other))


def test_spectral_norm_holds_every_discriminator_layer_at_one():
    d = ResNetDiscriminator(1, 28, 16, 10)
    d.train()
    with torch.no_grad():
        for _ in range(30):  # power iterations run in training forward passes
            d(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    d.eval()
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) >= 12
    for m in layers:
        w = m.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, abs=0.05), m


def test_n_dis_discriminator_steps_per_generator_step_and_separate_learning_rates(idx_dir):
    r = api.build_recipe("sngan", data_dir=str(idx_dir), n_dis=3, lr=1e-4, lr_d=4e-4, **TINY)
    assert r.optimizers["generator"].param_groups[0]["lr"] == 1e-4
    assert r.optimizers["discriminator"].param_groups[0]["lr"] == 4e-4
    batches = r.batches.epoch(0)
    g_moved = []
    for _ in range(7):
        before = [p.detach().clone() for p in r.generator.parameters()]
        r.train_step(next(batches))
        g_moved.append(any(not torch.equal(a, p) for a, p in zip(before, r.generator.parameters())))
    assert g_moved == [True, False, False, True, False, False, True]
    assert r.d_steps == 7 and r.optimizers["discriminator"].state  # one discriminator step each


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n-dis", "0"], "--n-dis 0"),
        (["--r1", "-1"], "--r1 -1"),
        (["--gan-loss", "wgan"], "--gan-loss"),
        (["--lr-d", "0"], "--lr-d 0"),
        (["--ngf", "4"], "--ngf 4"),
        (["--image-size", "48"], "--image-size 48"),
        (["--ada", "1.5"], "--ada 1.5"),
        (["--ada", "0.6", "--diffaugment", "translation"], "--ada with --diffaugment translation"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    assert cli.main(["train", "sngan", *args, "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not run.exists()


def test_a_conditional_run_needs_labelled_data(tmp_path, capsys):
    folder = tmp_path / "flat"
    folder.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("L", (28, 28), 40 * i).save(folder / f"{i}.png")
    assert cli.main(["train", "csngan", "--data", str(folder), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and not (tmp_path / "run").exists()


def test_adaptive_augmentation_is_exact_differentiable_and_steered_by_overfitting():
    from gankit.nn.ada import AdaptiveAugment, _geometric

    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    ada = AdaptiveAugment(target=0.6, interval=2, speed=1000)
    assert ada.augment(x) is x  # p = 0: nothing happens
    moved = _geometric(x, 1.0)
    assert not torch.equal(moved, x)
    for a, b in zip(moved, x):  # flips, quarter turns and integer shifts only move pixels
        assert (a.flatten()[:, None] - b.flatten()[None]).abs().amin(1).max() < 1e-4
    ada.p = 0.5
    leaf = x.clone().requires_grad_(True)
    ada.augment(leaf).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    # The controller: certain on every real image -> p rises by images / speed per interval.
    ada = AdaptiveAugment(target=0.6, interval=2, speed=1000)
    for _ in range(4):
        ada.observe(torch.ones(50))
    assert ada.p == pytest.approx(0.2)
    state = ada.state()
    for _ in range(20):
        ada.observe(-torch.ones(50))  # cannot tell real from fake -> p falls back, not below 0
    assert ada.p == 0.0
    ada.load_state(state)
    assert ada.p == pytest.approx(0.2)


def test_a_run_with_adaptive_augmentation_resumes_exactly(tmp_path, idx_dir):
    import gankit
    from gankit.engine.checkpoint import load_checkpoint

    opts = dict(TINY, data_dir=str(idx_dir), n_dis=2, ada=0.6, ada_interval=1, ada_speed=50, log_every=1)
    gankit.train("sngan", progress=False, out=str(tmp_path / "whole"), max_steps=8, **opts)
    gankit.train("sngan", progress=False, out=str(tmp_path / "half"), max_steps=4, **opts)
    gankit.resume(tmp_path / "half", max_steps=8, progress=False)
    a, b = (
        load_checkpoint(sorted((tmp_path / r / "checkpoints").glob("step-*"))[-1]) for r in ("whole", "half")
    )
    flat_a, flat_b = _tensors(a), _tensors(b)
    assert flat_a.keys() == flat_b.keys() and any("ada_p" in k for k in flat_a)
    for k in flat_a:
        assert torch.equal(flat_a[k], flat_b[k]), k
    assert float(next(v for k, v in flat_a.items() if "ada_p" in k)) > 0  # the toy set is memorised


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _tensors(val, f"{prefix}/{key}").items()}
    return {}
