"""CycleGAN: loss terms, LR schedule, training on tiny unpaired folders, translate both ways, evaluate."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import gankit
from gankit import api
from gankit.cli import main
from gankit.engine.schedules import constant_then_linear
from gankit.recipes.cyclegan import CycleGANConfig, cycle_losses


def test_cycle_and_identity_terms_vanish_for_identity_generators():
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    t = cycle_losses(nn.Identity(), nn.Identity(), x, y, 10.0, 0.5)
    assert t["cycle"].item() == 0 and t["identity"].item() == 0
    neg = cycle_losses(nn.Identity(), lambda v: -v, x, y, 10.0, 0.5)  # F = negation: both nonzero
    assert neg["cycle"] > 0 and neg["identity"] > 0
    assert torch.allclose(neg["identity"], 10 * 0.5 * (2 * x).abs().mean())


@pytest.mark.parametrize("lambda_id", [0.5, 0.0])
def test_cycle_terms_batch_each_generators_images_and_equal_separate_calls(lambda_id):
    """G (A -> B) runs once on everything it sees (x, y, F's fake), F twice; the terms equal those of
    one call per image with per-image (instance-norm) networks, with and without the identity term."""
    from gankit.nn.unet import UNetGenerator

    torch.manual_seed(0)
    g_ab, g_ba = (UNetGenerator(3, 3, 32, norm="instance", dropout=0.0).eval() for _ in range(2))
    calls = {"ab": [], "ba": []}
    g_ab.register_forward_hook(lambda m, i, o: calls["ab"].append(len(i[0])))
    g_ba.register_forward_hook(lambda m, i, o: calls["ba"].append(len(i[0])))
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    t = cycle_losses(g_ab, g_ba, x, y, 10.0, lambda_id)
    assert calls == ({"ab": [6], "ba": [4, 2]} if lambda_id else {"ab": [4], "ba": [2, 2]})

    def one(g, v):  # one image per call
        return torch.cat([g(v[i : i + 1]) for i in range(len(v))])

    with torch.no_grad():
        fake_b, fake_a = one(g_ab, x), one(g_ba, y)
        cyc = (one(g_ba, fake_b) - x).abs().mean() + (one(g_ab, fake_a) - y).abs().mean()
        ident = (one(g_ba, x) - x).abs().mean() + (one(g_ab, y) - y).abs().mean()
    assert torch.allclose(t["fake_b"], fake_b, atol=1e-5) and torch.allclose(t["fake_a"], fake_a, atol=1e-5)
    assert t["cycle"].item() == pytest.approx(10 * cyc.item(), rel=1e-5)
    assert t["identity"].item() == pytest.approx(
        10 * lambda_id * ident.item() if lambda_id else 0.0, rel=1e-5
    )


def test_lr_schedule_start_middle_end():
    cfg = CycleGANConfig(epochs=40)
    assert cfg.decay_fraction == 0.5  # the paper: constant, then linear to zero over the second half
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = constant_then_linear(opt, 400, cfg.decay_fraction)
    lrs = []
    for _ in range(400):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[199] == 2e-4
    assert lrs[300] == pytest.approx(1e-4)
    assert lrs[399] == pytest.approx(2e-4 / 200) and opt.param_groups[0]["lr"] == 0


def make_domains(root, n_a=6, n_b=5, size=72, seed=0):
    rng = np.random.default_rng(seed)
    for d, n in (("trainA", n_a), ("trainB", n_b), ("testA", 2), ("testB", 2)):
        (root / d).mkdir(parents=True)
        for i in range(n):
            a = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
            img = Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(img)
            Image.fromarray(255 - arr if d.endswith("B") else arr).save(root / d / f"{i}.png")
    return root


@pytest.mark.long(42)
@pytest.mark.slow
def test_train_resume_translate_and_evaluate(tmp_path):
    root = make_domains(tmp_path / "d")
    run = tmp_path / "run"
    opts = dict(
        data=str(root),
        image_size=64,
        generator="resnet",
        resnet_blocks=2,
        batch_size=2,
        precision="fp32",
        log_every=3,
        checkpoint_every=3,
        progress=False,
        decay_epochs=0,
    )
    s = gankit.train("cyclegan", max_steps=9, out=str(run), **opts)
    assert s["steps"] == 9
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "loss_cycle" in x]
    assert rows[-1]["loss_cycle"] < rows[0]["loss_cycle"]
    assert (run / "previews" / "epoch-0000.png").exists()
    assert main(["translate", str(run), str(root / "testA"), "-o", str(tmp_path / "toB"), "--to", "B"]) == 0
    assert main(["translate", str(run), str(root / "testB"), "-o", str(tmp_path / "toA"), "--to", "A"]) == 0
    assert Image.open(tmp_path / "toA" / "0.png").size == (72, 72)
    r = api.evaluate(run)
    assert r["test_a"] == 2 and 0 < r["cycle_l1_A->B->A"] < 1
    # a run stopped at step 6 and resumed (pool, RNG, optimisers restored) ends equal to the whole run;
    # constant LR here: a decay schedule follows the planned length, which --max-steps changes
    part = tmp_path / "part"
    gankit.train("cyclegan", max_steps=6, out=str(part), **opts)
    gankit.resume(part, max_steps=9, progress=False)
    from safetensors.torch import load_file

    a = load_file(run / "checkpoints" / "step-00000009.safetensors")
    b = load_file(part / "checkpoints" / "step-00000009.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("modules."))


def test_bad_domains_are_named(tmp_path, capsys):
    root = make_domains(tmp_path / "d", 2, 2)
    for p in (root / "trainB").iterdir():
        p.unlink()
    assert (
        main(["train", "cyclegan", "--data", str(root), "--image-size", "64", "--out", str(tmp_path / "r")])
        == 1
    )
    err = capsys.readouterr().err
    assert "trainB: domain B holds no images" in err and "Traceback" not in err
