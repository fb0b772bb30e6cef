"""Pix2Pix end to end on tiny pair folders: data layouts, bad input, training, translate, evaluate."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gankit
from gankit import api
from gankit.cli import main
from gankit.data.download import extract_archive
from gankit.data.paired import PairBatches, count_split_files, list_pairs, pair_channels
from gankit.errors import GankitError
from gankit.metrics.image import l1, psnr, ssim
from gankit.translate import translate_image


def blobs(rng, size=40):
    """A smooth random colour image (a few Gaussian blobs), uint8 HxWx3."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(4):
        cy, cx, s = rng.random(3) * [1, 1, 0.3] + [0, 0, 0.1]
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s**2)[..., None] * rng.random(3)
    return (255 * img / img.max()).astype(np.uint8)


def make_aligned(root: Path, counts=(("train", 8), ("val", 3)), size=40, seed=0) -> Path:
    """A|B files where B is A's colour negative: an easily learnt mapping."""
    rng = np.random.default_rng(seed)
    for split, n in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = blobs(rng, size)
            Image.fromarray(np.concatenate([a, 255 - a], 1)).save(root / split / f"{i:03d}.png")
    return root


def test_two_folder_layout_pairs_by_name_and_reports_the_lonely_file(tmp_path):
    rng = np.random.default_rng(0)
    for side in "AB":
        (tmp_path / side).mkdir()
        for i in range(3):
            Image.fromarray(blobs(rng)).save(tmp_path / side / f"{i}.{'png' if side == 'A' else 'jpg'}")
    pairs = list_pairs(tmp_path)
    assert [p.stem for p in pairs.a] == [p.stem for p in pairs.b] == ["0", "1", "2"]
    Image.fromarray(blobs(rng)).save(tmp_path / "A" / "extra.png")
    with pytest.raises(GankitError, match=r"A/extra.png: no file of the same name"):
        list_pairs(tmp_path)


def test_bad_pairs_are_named(tmp_path):
    root = make_aligned(tmp_path / "d", (("train", 2),))
    Image.new("RGB", (81, 40)).save(root / "train" / "odd.png")
    pairs = list_pairs(root)
    b = PairBatches
    with pytest.raises(GankitError, match=r"odd.png: width 81 is odd"):
        b(pairs, (3, 3), 40, 32, 1, 0, torch.device("cpu"))
    (root / "train" / "odd.png").unlink()
    Image.new("RGB", (40, 20)).save(root / "train" / "small.png")
    with pytest.raises(GankitError, match=r"small.png: 20x20 per side is smaller than the 32 px crop"):
        b(list_pairs(root), (3, 3), 40, 32, 1, 0, torch.device("cpu"))
    kept = b(list_pairs(root), (3, 3), 40, 32, 1, 0, torch.device("cpu"), skip_bad=True)
    assert len(kept) == 2
    (root / "train" / "small.png").unlink()
    Image.new("L", (80, 40)).save(root / "train" / "gray.png")
    with pytest.raises(GankitError, match=r"gray.png: grayscale, but .* is colour"):
        pair_channels(list_pairs(root))


def test_different_sizes_in_two_folders(tmp_path):
    for side, size in (("A", (40, 40)), ("B", (48, 40))):
        (tmp_path / side).mkdir()
        Image.new("RGB", size).save(tmp_path / side / "x.png")
    with pytest.raises(GankitError, match=r"B/x.png: 48x40 but its pair .*A/x.png is 40x40"):
        PairBatches(list_pairs(tmp_path), (3, 3), 40, 32, 1, 0, torch.device("cpu"))


def test_lazy_loader_gives_the_same_batches_as_memory(tmp_path, monkeypatch):
    root = make_aligned(tmp_path / "d", (("train", 6),))
    pairs = list_pairs(root)
    mem = PairBatches(pairs, (3, 3), 40, 32, 2, 0, torch.device("cpu"))
    monkeypatch.setenv("GANKIT_MEMORY_BUDGET", "1")
    lazy = PairBatches(pairs, (3, 3), 40, 32, 2, 0, torch.device("cpu"), workers=0)
    assert mem.in_memory and not lazy.in_memory and len(mem) == len(lazy) == 3
    for (a1, b1), (a2, b2) in zip(mem.epoch(1, 1), lazy.epoch(1, 1)):
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
        assert torch.equal(b1, 255 - a1)  # B is A's negative: the pair stayed together


def test_archive_extraction_and_counts(tmp_path):
    src = make_aligned(tmp_path / "facades", (("train", 3), ("val", 2)))
    archive = tmp_path / "facades.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="facades")
    extract_archive(archive, tmp_path / "out")
    count_split_files(tmp_path / "out", {"train": 3, "val": 2})
    with pytest.raises(GankitError, match=r"train/ holds 3 images, the published archive has 400"):
        count_split_files(tmp_path / "out", {"train": 400})
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(GankitError, match="damaged archive"):
        extract_archive(broken, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2*"))


def test_named_dataset_downloads_checks_and_extracts(tmp_path, monkeypatch):
    """A named set comes through the cached downloader (here a file:// URL), is checked against its
    pinned digest and counted; a wrong digest or a damaged archive leaves nothing behind, so running
    again downloads afresh."""
    import hashlib

    from gankit.data import paired
    from gankit.recipes import pix2pix

    src = make_aligned(tmp_path / "facades", (("train", 4), ("val", 2)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="facades")
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "facades.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setattr(paired, "PIX2PIX_URL", (tmp_path / "srv").as_uri() + "/{}.tar.gz")
    monkeypatch.setitem(paired.PIX2PIX_SETS, "facades", {"train": 4, "val": 2})
    cfg = pix2pix.Pix2PixConfig(data="facades")
    cache = tmp_path / "cache" / "facades"
    monkeypatch.setitem(paired.PIX2PIX_DIGESTS, "facades", "md5:" + "0" * 32)
    with pytest.raises(GankitError, match=r"checksum mismatch .*the file was removed, run again"):
        pix2pix.resolve_paired_root(cfg, progress=False)
    assert not any(cache.iterdir())  # no archive, no partial file, no recorded hash
    broken = buf.getvalue()[: len(buf.getvalue()) // 2]
    (tmp_path / "srv" / "facades.tar.gz").write_bytes(broken)
    monkeypatch.setitem(paired.PIX2PIX_DIGESTS, "facades", "md5:" + hashlib.md5(broken).hexdigest())
    with pytest.raises(GankitError, match=r"damaged archive .*it was removed, run again"):
        pix2pix.resolve_paired_root(cfg, progress=False)
    assert not any(cache.iterdir())
    (tmp_path / "srv" / "facades.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setitem(paired.PIX2PIX_DIGESTS, "facades", "md5:" + hashlib.md5(buf.getvalue()).hexdigest())
    root = pix2pix.resolve_paired_root(cfg, progress=False)
    assert len(list_pairs(root, "train")) == 4 and len(list_pairs(root, "val")) == 2
    assert root.is_relative_to(tmp_path / "cache")


def test_metrics_against_known_values():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(l1(x, x), torch.zeros(2)) and torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    y = (x + 0.1).clamp(0, 1)
    assert torch.allclose(psnr(x, x.clone().add_(0.1)), torch.full((2,), 20.0), atol=1e-3)
    assert ssim(x, y).min() > ssim(x, torch.rand(2, 3, 32, 32)).max()
    skimage = pytest.importorskip("skimage.metrics")
    ref = skimage.structural_similarity(
        x[0].permute(1, 2, 0).numpy(),
        y[0].permute(1, 2, 0).numpy(),
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert abs(ssim(x[:1], y[:1]).item() - ref) < 1e-4


def test_translate_restores_any_size():
    calls = []

    def net(t):
        calls.append(t.shape)
        return -t  # a "negative" generator

    for h, w in ((20, 50), (32, 32), (70, 45), (100, 130)):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        out = translate_image(net, img, 32, 3)
        assert out.shape == (3, h, w)
        assert (out.int() - (255 - img.int())).abs().max() <= 1  # tiles blend back exactly
    assert all(s[-2:] == (32, 32) for s in calls)


@pytest.mark.slow
def test_train_lowers_l1_then_translate_and_evaluate(tmp_path):
    root = make_aligned(tmp_path / "pairs", (("train", 8), ("val", 3)), size=64)
    run = tmp_path / "run"
    s = gankit.train(
        "pix2pix",
        data=str(root),
        image_size=64,
        max_steps=48,
        batch_size=4,
        lr=1e-3,
        log_every=6,
        out=str(run),
        progress=False,
        precision="fp32",
    )
    assert s["steps"] == 48
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "loss_l1" in x]
    assert rows[-1]["loss_l1"] < 0.7 * rows[0]["loss_l1"], rows
    assert (run / "previews" / "epoch-0000.png").exists()

    Image.fromarray(blobs(np.random.default_rng(5), 150)[:90]).save(tmp_path / "wide.jpg")
    assert (
        main(
            [
                "translate",
                str(run),
                str(tmp_path / "wide.jpg"),
                str(root / "val"),
                "-o",
                str(tmp_path / "out"),
                "--side-by-side",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "out" / "wide.png").size == (300, 90)
    assert len(list((tmp_path / "out").glob("*.png"))) == 4

    r = api.evaluate(run)
    assert r["split"] == "val" and r["pairs"] == 3 and Path(r["panel"]).exists()
    assert r["model"]["l1"] < r["baselines"]["copy_input"]["l1"]
    assert "too few" in r["quality"]["skipped"]  # 3 pairs: FID is not measured, the pixel scores stand
    assert (run / "evaluation" / "report.json").exists()


def test_translate_refuses_a_dcgan_run_and_bad_direction(tmp_path, idx_dir, capsys):
    run = tmp_path / "g"
    gankit.train(
        "dcgan", data="mnist", data_dir=str(idx_dir), max_steps=1, batch_size=8, out=str(run), progress=False
    )
    assert main(["translate", str(run), str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "cannot translate (recipes that can: cyclegan, pix2pix)" in capsys.readouterr().err
