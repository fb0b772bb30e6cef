"""Files from strangers: images by content through an explicit list of decoders (no Ghostscript, ever),
hidden files, odd pixel formats, the decoded-image cache checked on use, export side files verified on
load, and run folders someone sent you (their TorchScript extractor, a run that never checkpointed)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_dir
from PIL import Image, ImageCms

import gankit
from gankit import api
from gankit.cli import main
from gankit.data import decoded, images
from gankit.data.images import BadImage, decode, list_images, load_image_folder, open_image
from gankit.data.mnist import read_idx
from gankit.errors import GankitError

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"
SMALL = dict(progress=False, precision="fp32", device="cpu", log_every=1)


def _folder(path: Path, n: int = 4, size: int = 16) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (40 * i, 100, 200)).save(path / f"{i}.png")
    return path


def test_the_fake_gs_is_what_pillow_would_run(fake_gs, tmp_path):
    """The check below can fail: opened the way Pillow opens files by default, the EPS file runs gs."""
    eps = tmp_path / "x.png"
    eps.write_bytes(EPS)
    with pytest.raises((OSError, subprocess.CalledProcessError)), Image.open(eps) as img:
        img.load()
    assert fake_gs.is_file()


def test_eps_named_png_is_refused_by_content_and_gs_never_runs(fake_gs, tmp_path, capsys):
    folder = _folder(tmp_path / "photos")
    (folder / "holiday.png").write_bytes(EPS)
    (folder / "scan.jpg").write_bytes(b"%PDF-1.4\n...")
    with pytest.raises(BadImage, match="its content is PostScript/EPS, not an image gankit reads"):
        open_image(folder / "holiday.png")
    with pytest.raises(BadImage, match="its content is PDF"):
        decode(folder / "scan.jpg", 3)
    with pytest.raises(GankitError, match=r"holiday.png: its content is PostScript/EPS.*--skip-bad-images"):
        load_image_folder(folder, 16)
    assert len(load_image_folder(folder, 16, skip_bad=True)) == 4
    capsys.readouterr()
    # training on the folder, through the command line: one line naming the file, exit 1
    assert main(["train", "dcgan", "--data", str(folder), "--max-steps", "1", "--out", "r"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holiday.png: its content is PostScript/EPS" in err[0]
    assert not Path("r").exists()
    assert not fake_gs.exists()  # nothing ever ran Ghostscript


def test_the_content_decides_not_the_extension(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "really-a-png.jpg", format="PNG")
    assert torch.equal(decode(tmp_path / "really-a-png.jpg", 3), torch.from_numpy(rgb).permute(2, 0, 1))


def test_hidden_files_are_skipped_and_tif_gif_are_images(tmp_path):
    folder = _folder(tmp_path / "f", n=2)
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork
    (folder / ".thumbs").mkdir()
    Image.new("RGB", (16, 16)).save(folder / ".thumbs" / "t.png")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(folder / "scan.tif")
    Image.new("P", (16, 16), 3).save(folder / "anim.gif")
    names = [p.name for p in list_images(folder)]
    assert names == ["0.png", "1.png", "anim.gif", "scan.tif"]
    assert len(load_image_folder(folder, 16)) == 4  # no --skip-bad-images needed


def test_cielab_images_decode_to_their_colours(tmp_path):
    rgb = Image.fromarray(
        np.array([[[200, 30, 40], [20, 180, 60]], [[30, 40, 220], [250, 250, 250]]], np.uint8)
    )
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    ImageCms.applyTransform(rgb, to_lab).save(tmp_path / "lab.tif")
    assert Image.open(tmp_path / "lab.tif").mode == "LAB"
    # 8-bit CIELAB quantises: within 12 levels; L*, a*, b* copied into R, G, B would be off by ~100
    colour = decode(tmp_path / "lab.tif", 3).permute(1, 2, 0).int()
    assert (colour - torch.from_numpy(np.asarray(rgb)).int()).abs().max() <= 12
    gray = decode(tmp_path / "lab.tif", 1)[0].int()  # L* is not luma: through RGB
    assert (gray - torch.from_numpy(np.asarray(rgb.convert("L"))).int()).abs().max() <= 12


def test_float_images_are_scaled_by_their_range_or_refused(tmp_path):
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "unit.tif")
    Image.fromarray(ramp * 255).save(tmp_path / "byte.tif")
    Image.fromarray(ramp * 1000).save(tmp_path / "hdr.tif")
    assert decode(tmp_path / "unit.tif", 1).max() == 255 and decode(tmp_path / "unit.tif", 1).min() == 0
    assert torch.equal(decode(tmp_path / "unit.tif", 1), decode(tmp_path / "byte.tif", 1))
    with pytest.raises(BadImage, match=r"floating-point pixels in \[0, 1000\]: expected 0..1 or 0..255"):
        decode(tmp_path / "hdr.tif", 1)


def test_an_idx_header_whose_size_overflows_is_one_line(tmp_path, capsys):
    idx = make_idx_dir(tmp_path / "idx")
    bad = idx / "train-images-idx3-ubyte.gz"
    bad.unlink()
    huge = struct.pack(">4B3I", 0, 0, 8, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (idx / "train-images-idx3-ubyte").write_bytes(huge + b"\x00" * 64)
    with pytest.raises(
        GankitError, match="truncated IDX file: header promises 79228162458924105385300197375 bytes"
    ):
        read_idx(idx / "train-images-idx3-ubyte")
    assert main(["train", "dcgan", "--data", "mnist", "--data-dir", str(idx), "--max-steps", "1"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_damaged_decoded_cache_is_decoded_again(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    monkeypatch.setenv("GANKIT_MEMORY_BUDGET", "1000")  # through the cache
    first = load_image_folder(folder, 16).images.clone()
    (data,) = (tmp_path / "cache" / "decoded").glob("*.u8")
    meta = json.loads(data.with_suffix(".json").read_text())
    assert meta["count"] == 20 and len(meta["sample_sha256"]) == 64
    for damage in ("zeros", "short"):
        with open(data, "r+b") as f:  # what a power loss can leave behind a complete-looking name
            if damage == "zeros":
                f.seek(data.stat().st_size // 2)
                f.write(b"\x00" * (data.stat().st_size // 2))
            else:
                f.truncate(data.stat().st_size - 7)
        again = load_image_folder(folder, 16).images
        assert torch.equal(again, first) and "decoded-image cache" in capsys.readouterr().err
    monkeypatch.setattr(images, "decode", lambda *a: pytest.fail("an intact cache is not decoded again"))
    assert torch.equal(load_image_folder(folder, 16).images, first)
    assert decoded.SAMPLED_ROWS >= 2


@pytest.fixture
def classifier_export(tmp_path, idx_dir):
    run = tmp_path / "ssgan"
    gankit.train("ssgan", out=str(run), data="mnist", data_dir=str(idx_dir), labels=20, max_steps=1, **SMALL)
    out = tmp_path / "clf.pt"
    api.export(run, out, "torchscript")
    return run, out


def test_an_export_whose_side_file_does_not_match_is_refused(
    classifier_export, tmp_path, idx_dir, monkeypatch
):
    from gankit.attacks import load_classifier

    run, out = classifier_export
    assert load_classifier(str(out)).class_names  # the side file gives class names and normalisation
    other = tmp_path / "other"
    gankit.train(
        "ssgan", out=str(other), data="mnist", data_dir=str(idx_dir), labels=20, max_steps=1, seed=9, **SMALL
    )
    # A crash after the side file is written and before the new model is renamed into place leaves
    # the old model beside the new side file: loading must refuse that pair.
    real_replace, old_bytes = os.replace, out.read_bytes()

    def crash_on_model(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_model)
    with pytest.raises(KeyboardInterrupt):
        api.export(other, out, "torchscript")
    monkeypatch.setattr(os, "replace", real_replace)
    assert out.read_bytes() == old_bytes and json.loads(Path(f"{out}.json").read_text())["run"] == str(other)
    with pytest.raises(GankitError, match=r"side file clf.pt.json describes another file \(sha256 differs\)"):
        load_classifier(str(out))
    api.export(other, out, "torchscript")  # exported again: the pair matches
    assert load_classifier(str(out)).class_names


def _toy_extractor(path: Path) -> Path:
    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    torch.jit.save(torch.jit.script(Features()), str(path))
    return path


def test_resume_loads_a_run_s_torchscript_extractor_only_when_named_again(tmp_path, idx_dir, capsys):
    extractor = _toy_extractor(tmp_path / "theirs.pt")
    run = tmp_path / "sent-to-me"
    opts = dict(data="mnist", data_dir=str(idx_dir), batch_size=32, eval_every=2, eval_samples=12)
    gankit.train("dcgan", out=str(run), max_steps=2, extractor=str(extractor), **opts, **SMALL)
    with pytest.raises(GankitError, match=r"names the FID extractor .*theirs.pt.*give --extractor .* again"):
        api.resume(run, max_steps=4, progress=False)
    assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 1
    assert "runs its code" in capsys.readouterr().err
    summary = api.resume(run, max_steps=4, progress=False, extractor=str(extractor))
    assert summary["steps"] == 4


def test_a_run_that_stopped_before_its_first_checkpoint_says_how_to_start_over(tmp_path, idx_dir, capsys):
    from gankit.engine.rundir import RunDir

    cfg = api.make_config("dcgan", data="mnist", data_dir=str(idx_dir), out=str(tmp_path / "r"))
    RunDir(cfg.out).create(cfg)  # what a kill during the first epoch leaves
    for argv in (
        ["train", "dcgan", "--data", "mnist", "--data-dir", str(idx_dir), "--out", cfg.out],
        ["train", "--resume", cfg.out],
    ):
        assert main(argv) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "stopped before its first checkpoint" in line and f"rm -r {cfg.out}" in line
