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
