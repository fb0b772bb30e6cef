"""Regression tests for broken promises found by reading the code and by runs (issue 10), one or more per
defect, numbered as in the issue. Each failed on the code before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import toy_images, write_idx
from PIL import Image

import gankit
from gankit import api, cli
from gankit.attacks import PGD, ImageClassifier, load_classifier
from gankit.data.download import extract_archive
from gankit.data.images import decode
from gankit.engine import checkpoint as ckpt_module
from gankit.engine.checkpoint import load_checkpoint, save_checkpoint
from gankit.engine.trainer import rng_state
from gankit.errors import GankitError


def _save(a: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _pairs_folder(root: Path, n: int = 3, size: int = 72) -> Path:
    """Aligned A|B files in a folder without train/val/test splits."""
    images, _ = toy_images(n, size, seed=4)
    for i, img in enumerate(images):
        rgb = np.stack([img, img // 2, 255 - img], -1).astype(np.uint8)
        _save(np.concatenate([rgb, rgb[:, ::-1]], axis=1), root / f"p{i}.png")
    return root


# 1 -- RNG states come back on the CPU whatever the training device -----------------------------------
def test_1_checkpoint_rng_states_stay_on_the_cpu(tmp_path):
    state = {"modules": {"w": torch.ones(3)}, "rng": rng_state()}
    path = save_checkpoint(tmp_path / "step-00000001.safetensors", state)
    loaded = load_checkpoint(path, "meta")  # any non-CPU device: the meta device exists everywhere
    assert loaded["modules"]["w"].device.type == "meta"
    assert loaded["rng"]["torch"].device.type == "cpu" and loaded["rng"]["torch"].dtype == torch.uint8
    torch.set_rng_state(loaded["rng"]["torch"])  # what resume does with it


# 2 -- a run resumed with more epochs gets its LR schedule rebuilt for the new length ----------------
def test_2_longer_resume_does_not_train_at_lr_zero(tmp_path):
    data = _pairs_folder(tmp_path / "pairs", size=136)  # 3 pairs: 3 steps an epoch
    run = tmp_path / "r"
    opts = dict(data=str(data), image_size=128, decay_epochs=1, checkpoint_every=4, precision="fp32")
    s = gankit.train("pix2pix", epochs=2, out=str(run), progress=False, **opts)
    assert s["steps"] == 6
    gankit.resume(run, epochs=4, progress=False)  # 12 steps, the LR decays over the last 3
    state = load_checkpoint(run / "checkpoints" / "step-00000008.safetensors")
    assert state["optimizers"]["generator"]["param_groups"][0]["lr"] == pytest.approx(2e-4)


# 3 -- attacks give every submodule its own mode back; load_classifier gives eval mode -----------------
def test_3_attack_restores_each_submodules_own_mode():
    inner = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    clf = ImageClassifier(inner, [0.5], [0.5], 8, 1)
    clf(torch.rand(2, 1, 8, 8))
    clf.train()
    inner.eval()  # an eval-mode network inside a train-mode wrapper, as users build them
    stats = inner[1].running_mean.clone()
    PGD(clf, 0.1, steps=2)(torch.rand(4, 1, 8, 8))
    assert clf.training and not any(m.training for m in inner.modules())
    clf(torch.rand(4, 1, 8, 8))
    assert torch.equal(inner[1].running_mean, stats)  # batch norm did not start updating


def test_3_load_classifier_returns_an_eval_mode_model(tmp_path):
    net = torch.jit.script(nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Flatten(1)))
    net.save(str(tmp_path / "m.pt"))
    clf = load_classifier(str(tmp_path / "m.pt"))
    assert not any(m.training for m in clf.modules())


# 4 -- a Pix2Pix translation depends on its own image alone ---------------------------------------------
def test_4_pix2pix_output_does_not_depend_on_the_batch():
    from gankit.recipes.pix2pix import Pix2Pix

    torch.manual_seed(0)
    cfg = api.make_config("pix2pix", image_size=64, in_channels=3, out_channels=3, precision="fp32")
    r = Pix2Pix(cfg, torch.device("cpu"))
    r.generator(torch.randn(4, 3, 64, 64))  # a training-mode pass: running statistics move
    x = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    together = r.translate_batch(x)
    alone = torch.cat([r.translate_batch(x[i : i + 1]) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # and it is not a constant
    assert not any(m.training for m in r.inference_module().modules())


# 5 -- evaluating a folder without a held-out split says so -------------------------------------------
def test_5_pix2pix_evaluate_never_calls_training_pairs_validation(tmp_path):
    data = _pairs_folder(tmp_path / "pairs")
    run = tmp_path / "run"
    gankit.train(
        "pix2pix", data=str(data), image_size=64, max_steps=1, out=str(run), progress=False, precision="fp32"
    )
    r = api.evaluate(run)
    assert r["split"] == "train" and "TRAINING pairs" in r["warning"] and r["lines"][0] == r["warning"]
    assert json.loads((run / "evaluation" / "report.json").read_text())["split"] == "train"


# 6 -- durable checkpoints ----------------------------------------------------------------------------
def test_6_checkpoints_are_fsynced_with_their_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = save_checkpoint(tmp_path / "c" / "step-00000001.safetensors", {"w": torch.ones(2)})
    if Path("/proc/self/fd").is_dir():
        assert any(s.endswith(".tmp") for s in synced)  # the file, before the rename
        assert synced.count(str(path.parent)) >= 2  # its folder, before and after
    else:
        assert len(synced) >= 3


def test_6_resume_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    from gankit.engine.checkpoint import load_latest

    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "step-00000002.safetensors", {"w": torch.full((2,), 2.0)})
    newest = save_checkpoint(folder / "step-00000004.safetensors", {"w": torch.full((2,), 4.0)})
    newest.write_bytes(newest.read_bytes()[:40])  # a write the disk lost
    path, state = load_latest(folder)
    assert path.name == "step-00000002.safetensors" and torch.equal(state["w"], torch.full((2,), 2.0))
    assert "step-00000004" in capsys.readouterr().err


def test_6_an_unreadable_new_checkpoint_never_rotates_the_old_ones_away(tmp_path, idx_dir, monkeypatch):
    from gankit.engine.checkpoint import load_latest

    run = tmp_path / "r"
    opts = dict(data="mnist", data_dir=str(idx_dir), batch_size=32, checkpoint_every=2, keep_checkpoints=1)
    gankit.train("dcgan", max_steps=2, out=str(run), progress=False, **opts)

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"not a checkpoint")

    monkeypatch.setattr(ckpt_module, "save_file", broken)
    with pytest.raises(GankitError, match="not a readable gankit checkpoint"):
        gankit.resume(run, max_steps=4, progress=False)
    monkeypatch.undo()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002.safetensors"]
    path, _ = load_latest(run / "checkpoints")
    assert path.name == "step-00000002.safetensors"


# 7 -- PGD-L2's random start radius is drawn per sample --------------------------------------------------
def test_7_pgd_l2_start_radius_is_per_sample():
    x = torch.full((6, 1, 8, 8), 0.5)
    x[:, :, 4:, 4:] = torch.linspace(0.3, 0.7, 6).view(6, 1, 1, 1)  # same corner pixel, different images
    atk = PGD(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), 0.05, norm="l2", seed=1)
    radii = (atk._start(x, 0) - x).flatten(1).norm(dim=1)
    assert len(set(radii.round(decimals=6).tolist())) == 6


# 8 -- 16-bit images are scaled by their mode, not by their content ------------------------------------
def test_8_dark_16_bit_image_stays_dark(tmp_path):
    a = np.full((8, 8), 200, np.uint16)  # 0.3% of the 16-bit range: near black
    path = tmp_path / "dark16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    assert decode(path, 1).max().item() == round(200 / 257)


# 9 -- outputs never overwrite each other --------------------------------------------------------------
def test_9_distinct_output_names():
    from gankit.io import distinct_stems

    paths = [Path("x/a.jpg"), Path("x/a.png"), Path("y/b.png"), Path("z/b.png"), Path("x/c.png")]
    stems = distinct_stems(paths)
    assert len(set(stems)) == len(paths) and stems[-1] == Path("c")
    assert stems[:2] == [Path("a_jpg"), Path("a_png")]


def test_9_translate_writes_one_file_per_input(tmp_path):
    data = _pairs_folder(tmp_path / "pairs")
    run = tmp_path / "run"
    gankit.train(
        "pix2pix", data=str(data), image_size=64, max_steps=1, out=str(run), progress=False, precision="fp32"
    )
    img = np.asarray(Image.open(data / "p0.png"))[:, :72]
    inputs = [
        _save(img, tmp_path / "in" / "a.png"),
        tmp_path / "in" / "a.jpg",
        _save(img, tmp_path / "o" / "a.png"),
    ]
    Image.fromarray(img).save(inputs[1], quality=95)
    results = api.translate(run, inputs, tmp_path / "out")
    outs = {r["output"] for r in results}
    assert len(outs) == 3 and all(Path(o).is_file() for o in outs)


# 10 -- an SSGAN on data with an empty class ------------------------------------------------------------
def test_10_ssgan_with_an_empty_class_trains_with_a_note(tmp_path, capsys):
    folder = tmp_path / "letters"
    folder.mkdir()
    images, labels = toy_images(256)
    for prefix in ("emnist-letters-train", "emnist-letters-test"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels + 1)  # letters: 1..26, class 0 empty
    s = gankit.train(
        "ssgan",
        data="emnist-letters",
        data_dir=str(folder),
        labels=40,
        max_steps=2,
        out=str(tmp_path / "r"),
        progress=False,
    )
    assert s["steps"] == 2
    err = capsys.readouterr().err
    assert "classes 0 ('N/A'), 5 ('e')" in err and "drawn from the other 4 classes" in err
    labelled = torch.tensor(json.loads((tmp_path / "r" / "labelled_indices.json").read_text())["indices"])
    counts = torch.bincount(torch.from_numpy(labels.astype(np.int64) + 1)[labelled], minlength=27)
    assert counts[1:5].tolist() == [10, 10, 10, 10] and counts.sum() == 40


# 11 -- decompression bombs are bad images; tar extraction works without the 'data' filter ----------
def test_11_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    for i in range(3):
        _save(np.full((40, 40, 3), 60 * i, np.uint8), folder / f"ok{i}.png")
    _save(np.zeros((100, 100, 3), np.uint8), folder / "huge.png")
    monkeypatch.setenv("GANKIT_MAX_IMAGE_PIXELS", "5000")
    code = cli.main(
        ["train", "dcgan", "--data", str(folder), "--max-steps", "1", "--out", str(tmp_path / "a")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "huge.png" in err and "GANKIT_MAX_IMAGE_PIXELS" in err and len(err.splitlines()) == 1
    s = gankit.train(
        "dcgan",
        data=str(folder),
        max_steps=1,
        batch_size=2,
        skip_bad_images=True,
        out=str(tmp_path / "b"),
        progress=False,
    )
    assert s["steps"] == 1 and "skipping unreadable image" in capsys.readouterr().err


def test_11_tar_extraction_without_the_data_filter(tmp_path, monkeypatch):
    src = tmp_path / "src" / "set"
    _save(np.zeros((4, 4, 3), np.uint8), src / "train" / "x.png")
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="set")
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "train" / "x.png").is_file()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(src / "train" / "x.png", arcname="../escape.png")
    with pytest.raises(GankitError, match="damaged archive.*unsafe member"):
        extract_archive(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.png").exists()


def test_11_dependency_floors():
    text = Path(__file__).parents[1].joinpath("pyproject.toml").read_text()
    assert '"pillow>=9.1"' in text  # Image.Resampling


# 12 -- a named pix2pix dataset trains in the seed's direction by default ------------------------------
def test_12_cityscapes_defaults_to_labels_to_photo(tmp_path):
    root = tmp_path / "cityscapes"
    _pairs_folder(root / "train", n=2)
    _pairs_folder(root / "val", n=2)
    cfg = api.make_config("pix2pix", data="cityscapes", data_dir=str(root))
    from gankit.data import paired

    counts = {"train": 2, "val": 2}
    with pytest.MonkeyPatch.context() as m:
        m.setitem(paired.PIX2PIX_SETS, "cityscapes", counts)
        from gankit.recipes.pix2pix import Pix2Pix

        Pix2Pix.load_data(cfg)
    assert cfg.direction == "BtoA"
    folder_cfg = api.make_config("pix2pix", data=str(root))
    Pix2Pix.load_data(folder_cfg)
    assert folder_cfg.direction == "AtoB"


# 13 -- OS errors on user paths are one line; refused options are named --------------------------------
def test_13_out_that_cannot_be_created_is_one_line(tmp_path, idx_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in ("/proc/gankit-test/run", str(blocker / "run")):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "gankit",
                "train",
                "dcgan",
                "--data",
                "mnist",
                "--data-dir",
                str(idx_dir),
                "--out",
                out,
                "--max-steps",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "--out" in p.stderr


def test_13_resume_with_a_model_option_names_it(tmp_path, idx_dir, capsys):
    run = tmp_path / "r"
    gankit.train(
        "dcgan", data="mnist", data_dir=str(idx_dir), max_steps=1, batch_size=32, out=str(run), progress=False
    )
    assert cli.main(["train", "--resume", str(run), "--lr", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "--lr 0.5: cannot change when resuming" in err and "invalid choice" not in err


# 14 -- TorchScript files run code when loaded: the product says so -------------------------------------
def test_14_torchscript_warnings_say_loading_runs_code(tmp_path):
    import gankit.attacks.classifiers as classifiers

    assert "runs the code" in classifiers.torchscript_model.__doc__
    bad = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(GankitError, match="runs its code when loaded"):
        load_classifier(str(bad))
    guide = (Path(__file__).parents[1] / "docs" / "guides" / "attacks.md").read_text()
    assert "only TorchScript files you trust" in guide
