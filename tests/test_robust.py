"""The robust recipe: adversarial training makes a model robust where plain training does not, every
method and the GAN-data options do what they say, and bad options are one-line errors. (Resume,
export, classify and the other promises come from the recipe contract tests.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import gankit
from gankit import api, cli
from gankit.attacks import PGD, load_classifier
from gankit.errors import GankitError


def _folder(root, n_per_class: int, seed: int):
    """A labelled folder of 12 px images: class 0 a faint bar on the left, class 1 on the right, on
    noise. A network separates them with a small margin unless it is trained to keep a large one."""
    rng = np.random.default_rng(seed)
    for c in (0, 1):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = rng.uniform(0.3, 0.7, (12, 12))
            a[:, 1:4] += 0.12 if c == 0 else -0.12
            a[:, 8:11] += -0.12 if c == 0 else 0.12
            Image.fromarray((a.clip(0, 1) * 255).round().astype(np.uint8)).save(
                root / f"class{c}" / f"{i}.png"
            )
    return root


# One epoch of the toy MNIST folder (tests/conftest.py `idx_dir`) with the cheapest attack settings.
TINY_MNIST = dict(
    data="mnist",
    epochs=1,
    attack_steps=1,
    validation=16,
    val_count=8,
    val_steps=1,
    eps=0.1,
    precision="fp32",
    device="cpu",
)


def _quick(tmp_path, out, **kw):
    opts = dict(
        data=str(_folder(tmp_path / "train", 64, 0)),
        image_size=12,
        epochs=6,
        batch_size=32,
        validation=16,
        val_count=16,
        val_steps=3,
        attack_steps=3,
        log_every=4,
        precision="fp32",
        device="cpu",
        lr=3e-3,
        lr_schedule="constant",
    )
    return gankit.train("robust", progress=False, out=str(tmp_path / out), **{**opts, **kw})


def _robust_accuracy(run, folder, eps):
    clf = load_classifier(str(run)).eval()
    images, labels = [], []
    for c in (0, 1):
        for p in sorted((folder / f"class{c}").glob("*.png")):
            images.append(torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)[None])
            labels.append(c)
    x, y = torch.stack(images), torch.tensor(labels)
    adv = PGD(clf, eps, steps=10)(x, y)
    with torch.no_grad():
        return (clf(x).argmax(1) == y).float().mean().item(), (clf(adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("method", ["pgd", "trades", "fgsm"])
def test_adversarial_training_buys_robustness_that_plain_training_lacks(tmp_path, method, one_thread):
    test = _folder(tmp_path / "test", 40, 1)
    _quick(tmp_path, "plain", eps=0.0)
    _quick(tmp_path, method, eps=0.08, method=method)
    clean_plain, robust_plain = _robust_accuracy(tmp_path / "plain", test, 0.08)
    clean, robust = _robust_accuracy(tmp_path / method, test, 0.08)
    assert clean_plain > 0.9 and clean > 0.8
    assert robust > robust_plain + 0.2, (method, robust, robust_plain)


def test_a_standard_twin_at_eps_0_runs_no_attack(tmp_path, idx_dir, monkeypatch):
    r = api.build_recipe("robust", data_dir=str(idx_dir), **TINY_MNIST)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    assert r.adversarial(x, y, 0.0) is x
    calls = []
    monkeypatch.setattr(r.net, "forward", lambda t: calls.append(1) or t.flatten(1)[:, :10])
    adv = r.adversarial(x, y, 0.05)
    assert len(calls) == r.cfg.attack_steps and (adv - x).abs().max() <= 0.05 + 1e-6


def test_eps_warms_up_linearly_and_the_best_checkpoint_is_kept_by_validation_robust_accuracy(tmp_path):
    _quick(tmp_path, "warm", eps=0.08, eps_warmup=0.5, epochs=4, log_every=1)
    rows = [json.loads(line) for line in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    eps = [r["eps"] for r in rows if "eps" in r]
    total = len(eps)
    assert eps == sorted(eps) and eps[-1] == pytest.approx(0.08)
    assert eps[0] == pytest.approx(0.08 / (total // 2), rel=0.2)  # from ~0, not from eps
    best = json.loads((tmp_path / "warm" / "checkpoints" / "best.json").read_text())
    logged = [r["val_robust_accuracy"] for r in rows if "val_robust_accuracy" in r]
    assert best["metric"] == "val_robust_accuracy" and best["value"] == max(logged)
    assert (tmp_path / "warm" / "checkpoints" / "best.safetensors").is_file()


def test_a_step_period_attacks_validation_on_it_and_epochs_log_clean_accuracy_only(tmp_path, idx_dir):
    # 40 labels at batch 20: an epoch is 2 steps; the PGD check runs every 3 steps, not every epoch.
    opts = dict(TINY_MNIST, data_dir=str(idx_dir), batch_size=20, labels=40, epochs=6, eval_every=3)
    gankit.train("robust", progress=False, out=str(tmp_path / "run"), **opts)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    attacked = [r["step"] for r in rows if "val_robust_accuracy" in r]
    assert attacked == [3, 6, 9, 12]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [2, 4, 6, 8, 10, 12]


def test_a_seed_draws_the_ssgan_s_labelled_images_beside_the_ssgan_s_validation_split(tmp_path, idx_dir):
    """robust --labels N --seed S labels the very images ssgan --labels N --seed S does, beside the same
    held-out split, so a pseudo-labeller and the robust runs it serves share their splits."""
    common = dict(data="mnist", data_dir=str(idx_dir), labels=20, validation=16, seed=3, progress=False)
    gankit.train("ssgan", out=str(tmp_path / "ss"), max_steps=1, batch_size=20, device="cpu", **common)
    gankit.train("robust", out=str(tmp_path / "rb"), **{**TINY_MNIST, **common, "max_steps": 1})

    def split(run, name):
        return json.loads((tmp_path / run / name).read_text())["indices"]

    for name in ("labelled_indices.json", "validation_indices.json"):
        assert split("rb", name) == split("ss", name), name
    assert not set(split("rb", "labelled_indices.json")) & set(split("rb", "validation_indices.json"))


def test_pseudo_labelled_and_generated_images_join_every_batch(tmp_path, idx_dir):
    common = dict(TINY_MNIST, data_dir=str(idx_dir), batch_size=20)
    gankit.train("robust", progress=False, out=str(tmp_path / "teacher"), **common)
    gankit.train(
        "cdcgan",
        progress=False,
        out=str(tmp_path / "gen"),
        data="mnist",
        data_dir=str(idx_dir),
        max_steps=2,
        precision="fp32",
        device="cpu",
    )
    run = tmp_path / "student"
    gankit.train(
        "robust",
        progress=False,
        out=str(run),
        labels=40,
        unlabelled="rest",
        pseudo_labeller=str(tmp_path / "teacher"),
        unlabelled_ratio=0.25,
        generated=str(tmp_path / "gen"),
        generated_ratio=0.25,
        generated_count=30,
        **common,
    )
    sources = json.loads((run / "sources.json").read_text())
    assert sources["images"] == {"labelled": 40, "pseudo-labelled": 256 - 16 - 40, "generated": 30}
    assert sources["batch"] == {"labelled": 10, "pseudo-labelled": 5, "generated": 5}
    r = api.load_recipe(run)
    r.attach_data(r.load_data(r.cfg))
    (x_lab, _), (x_unl, y_unl), (x_gen, y_gen) = r.batches.sources
    teacher = load_classifier(str(tmp_path / "teacher"))
    with torch.no_grad():
        assert torch.equal(y_unl.cpu(), teacher(x_unl.float().div(255)).argmax(1))
    assert torch.equal(y_gen, torch.arange(30) % 10) and x_gen.dtype == torch.uint8
    x, y = next(r.batches.epoch(0))
    assert len(x) == 20 and len(y) == 20


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--eps", "1.5"], "--eps 1.5: expected a value in [0, 1]"),
        (["--unlabelled", "rest"], "--unlabelled and --pseudo-labeller go together"),
        (
            ["--unlabelled-ratio", "1.2", "--unlabelled", "rest", "--pseudo-labeller", "x"],
            "--unlabelled-ratio 1.2: expected a share",
        ),
        (
            [
                "--generated-ratio",
                "0.6",
                "--generated",
                "g",
                "--unlabelled-ratio",
                "0.5",
                "--unlabelled",
                "rest",
                "--pseudo-labeller",
                "x",
            ],
            "leave some of each batch",
        ),
        (["--attack-steps", "0"], "--attack-steps 0: expected a positive integer"),
        (["--eps-warmup", "1"], "--eps-warmup 1.0: expected a fraction"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, idx_dir, extra, message):
    code = cli.main(
        [
            "train",
            "robust",
            "--data",
            "mnist",
            "--data-dir",
            str(idx_dir),
            "--out",
            str(tmp_path / "r"),
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_generated_must_be_a_conditional_generator_and_folders_need_classes(tmp_path, capsys, idx_dir):
    gankit.train(
        "dcgan",
        progress=False,
        out=str(tmp_path / "dc"),
        data="mnist",
        data_dir=str(idx_dir),
        max_steps=1,
        precision="fp32",
        device="cpu",
    )
    code = cli.main(
        [
            "train",
            "robust",
            "--data",
            "mnist",
            "--data-dir",
            str(idx_dir),
            "--out",
            str(tmp_path / "r"),
            "--generated",
            str(tmp_path / "dc"),
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "not a class-conditional generator" in err and str(tmp_path / "dc") in err
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(flat / "a.png")
    assert cli.main(["train", "robust", "--data", str(flat), "--out", str(tmp_path / "r2")]) == 1
    assert "class sub-folders" in capsys.readouterr().err


def test_a_robust_run_is_evaluated_by_autoattack_on_a_dataset_s_test_split(tmp_path, idx_dir):
    run = tmp_path / "run"
    gankit.train("robust", progress=False, out=str(run), **TINY_MNIST, data_dir=str(idx_dir), batch_size=32)
    from gankit.attacks import robustness

    r = robustness(str(run), str(idx_dir), ["autoattack"], "0.05", tmp_path / "rob", steps=5, count=20)
    assert r["count"] == 20 and r["protocol"]["autoattack"]["steps"] == 5
    best = robustness(
        str(run), str(idx_dir), ["pgd"], "0.05", tmp_path / "rob3", steps=2, count=8, checkpoint="best"
    )
    assert best["count"] == 8  # the checkpoint kept by validation robust accuracy
    with pytest.raises(GankitError, match="--count 0"):
        robustness(str(run), str(idx_dir), ["pgd"], "0.05", tmp_path / "rob2", count=0)
