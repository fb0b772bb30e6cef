import gzip

import numpy as np
import pytest
import torch
from conftest import toy_images, write_idx
from PIL import Image

from gankit.data import EMBEDDED, known_datasets, load_dataset
from gankit.data.batches import InMemoryBatches
from gankit.data.images import load_image_folder, load_labelled_folder
from gankit.data.mnist import SPECS, images_from_idx, read_idx
from gankit.errors import GankitError


def test_read_idx_gz_and_raw_agree(tmp_path):
    images, _ = toy_images(10)
    a = read_idx(write_idx(tmp_path / "a.gz", images))
    b = read_idx(write_idx(tmp_path / "b", images, compress=False))
    assert a.shape == (10, 28, 28) and np.array_equal(a, images) and np.array_equal(a, b)


def test_truncated_idx_is_a_clear_error(tmp_path):
    images, _ = toy_images(10)
    path = write_idx(tmp_path / "t", images, compress=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GankitError, match=r"t: truncated IDX file.*7840 bytes.*found 7740"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"hello world, not idx"))
    with pytest.raises(GankitError, match="not an IDX file"):
        read_idx(path)


def test_emnist_images_are_transposed_back(tmp_path):
    images, labels = toy_images(4)
    images[:, 0, 5] = 255  # a mark in row 0, column 5 of the *stored* image
    img = write_idx(tmp_path / "i.gz", images)
    lbl = write_idx(tmp_path / "l.gz", labels)
    ds = images_from_idx(img, lbl, SPECS["emnist-digits"], "t")
    assert ds.images.shape == (4, 1, 28, 28)
    assert (ds.images[:, 0, 5, 0] == 255).all()  # shows up in column 0, row 5


def test_label_out_of_range(tmp_path):
    images, labels = toy_images(4)
    labels[2] = 12
    with pytest.raises(GankitError, match="label 12 out of range for 10 classes"):
        images_from_idx(
            write_idx(tmp_path / "i.gz", images), write_idx(tmp_path / "l.gz", labels), SPECS["mnist"], "t"
        )


def test_embedded_set_is_balanced_fashion_mnist():
    ds = load_dataset(EMBEDDED)
    assert ds.images.shape == (4000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [400] * 10
    assert ds.classes[0] == "T-shirt/top" and 60 < ds.images.float().mean() < 100
    assert len(load_dataset(EMBEDDED, "test")) == 500


def test_named_dataset_from_data_dir(idx_dir):
    ds = load_dataset("fashion-mnist", data_dir=str(idx_dir))
    assert len(ds) == 256 and ds.labels.max() == 3
    ds32 = load_dataset("fashion-mnist", data_dir=str(idx_dir), image_size=32, channels=3)
    assert ds32.images.shape == (256, 3, 32, 32)


def test_data_dir_missing_file(tmp_path):
    with pytest.raises(GankitError, match="no train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=str(tmp_path))


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(GankitError, match="unknown dataset.*emnist-letters.*fashion-mnist"):
        load_dataset("fashon-mnist")
    assert "emnist-balanced" in known_datasets() and EMBEDDED in known_datasets()


def _write_mixed_folder(root):
    (root / "sub").mkdir(parents=True)
    Image.new("L", (40, 30), 128).save(root / "gray.png")
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(root / "sub" / "transparent.png")
    Image.new("RGB", (50, 40), (0, 0, 255)).save(root / "sub" / "blue.jpg")
    palette = Image.new("P", (20, 20), 3)
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])  # a real palette: Pillow
    palette.save(root / "palette.bmp")  # 12.3 (what Gradio pins) writes an unreadable BMP without one
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(root / "deep16.png")
    (root / "notes.txt").write_text("ignored: not an image")


def test_image_folder_converts_every_mode(tmp_path):
    _write_mixed_folder(tmp_path / "imgs")
    ds = load_image_folder(tmp_path / "imgs", size=32)
    assert ds.images.shape == (5, 3, 32, 32)  # colour files present -> 3 channels
    by_name = dict(zip(["deep16", "gray", "palette", "blue", "transparent"], ds.images))
    assert (by_name["deep16"] == 255).all()  # 16-bit white stays white (scaled, not clipped)
    assert (by_name["gray"] == 128).all()
    assert (by_name["transparent"] == 255).all()  # fully transparent -> white background
    assert by_name["blue"][2].float().mean() > 250 and by_name["blue"][0].float().mean() < 5


def test_unreadable_image_named_or_skipped(tmp_path, capsys):
    _write_mixed_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(
        GankitError, match=r"broken.png: not a PNG, JPEG, WebP, BMP, TIFF or GIF image; pass --skip"
    ):
        load_image_folder(tmp_path / "imgs", size=16)
    (tmp_path / "imgs" / "broken.png").unlink()
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(whole)
    (tmp_path / "imgs" / "cut.png").write_bytes(whole.read_bytes()[:2000])  # a PNG cut short
    with pytest.raises(
        GankitError, match=r"cut.png: cannot decode image \(OSError: .*\); pass --skip-bad-images"
    ):
        load_image_folder(tmp_path / "imgs", size=16)
    ds = load_image_folder(tmp_path / "imgs", size=16, skip_bad=True)
    assert len(ds) == 5 and "skipping unreadable image" in capsys.readouterr().err


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GankitError, match="empty: no images found"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(GankitError, match="nope: no such folder"):
        load_image_folder(tmp_path / "nope", 28)


def test_labelled_folder(tmp_path):
    for c, v in (("cat", 10), ("dog", 200)):
        (tmp_path / "lab" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), v + i).save(tmp_path / "lab" / c / f"{i}.png")
    (tmp_path / "lab" / "unlabeled").mkdir()
    Image.new("L", (28, 28), 99).save(tmp_path / "lab" / "unlabeled" / "u.png")
    labelled, extra = load_labelled_folder(tmp_path / "lab", 28)
    assert labelled.classes == ["cat", "dog"] and labelled.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(extra) == 1 and labelled.channels == 1
    (tmp_path / "lab" / "dog2").mkdir()
    with pytest.raises(GankitError, match="dog2: class folder holds no images"):
        load_labelled_folder(tmp_path / "lab", 28)


def test_batches_cover_each_epoch_once_and_resume_mid_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    b = InMemoryBatches(images, 3, seed=5, device=torch.device("cpu"))
    assert len(b) == 3  # the partial batch is dropped
    epoch0 = [x[:, 0, 0, 0].tolist() for x, _ in b.epoch(0)]
    assert len({v for batch in epoch0 for v in batch}) == 9
    assert [x[:, 0, 0, 0].tolist() for x, _ in b.epoch(0, start=1)] == epoch0[1:]
    assert [x[:, 0, 0, 0].tolist() for x, _ in b.epoch(1)] != epoch0


def _photo_folder(folder, n, size=40):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_folders_beyond_the_memory_budget_go_through_the_decoded_cache(tmp_path, monkeypatch):
    from gankit.data import decoded, images

    folder = _photo_folder(tmp_path / "photos", 12)
    (folder / "bad.png").write_bytes(b"not an image")
    in_memory = load_image_folder(folder, 32, skip_bad=True).images
    monkeypatch.setenv("GANKIT_MEMORY_BUDGET", "1000")
    cached = load_image_folder(folder, 32, skip_bad=True).images
    assert torch.equal(cached, in_memory) and cached.dtype == torch.uint8
    files = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert [f.suffix for f in files] == [".json", ".u8"]  # complete: no part file left
    assert files[1].stat().st_size == 12 * 3 * 32 * 32  # the bad file left no row
    # a second load reads the cache without decoding; an edited folder is decoded again
    monkeypatch.setattr(images, "decode", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_image_folder(folder, 32, skip_bad=True).images, in_memory)
    monkeypatch.undo()
    monkeypatch.setenv("GANKIT_MEMORY_BUDGET", "1000")
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "cache"))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "0.png")
    assert load_image_folder(folder, 32, skip_bad=True).images[0].max() == 0
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 2
    # a bad file without --skip-bad-images: the one-line error, and no cache file half-written
    (folder / "1.png").write_bytes(b"broken")
    with pytest.raises(GankitError, match="1.png"):
        load_image_folder(folder, 32)
    assert not list((tmp_path / "cache" / "decoded").glob(".*part"))
    assert decoded.memory_budget() == 1000


def test_a_run_trains_from_the_decoded_cache(tmp_path, monkeypatch):
    import gankit

    folder = _photo_folder(tmp_path / "photos", 16)
    monkeypatch.setenv("GANKIT_MEMORY_BUDGET", "1000")
    opts = dict(data=str(folder), image_size=32, batch_size=8, epochs=1, out="run", progress=False)
    s = gankit.train("dcgan", **opts)
    assert s["steps"] == 2 and list((tmp_path / "cache" / "decoded").glob("*.u8"))


def test_gans_train_idx_folders_at_28_px_and_image_folders_at_64(idx_dir, tmp_path):
    from gankit.recipes.dcgan import DCGAN, DCGANConfig

    cfg = DCGANConfig(data=str(idx_dir))
    assert DCGAN.load_data(cfg).images.shape[-2:] == (28, 28) and cfg.image_size == 28
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, a in enumerate(toy_images(4, seed=3)[0]):
        Image.fromarray(np.asarray(a).squeeze()).resize((40, 40)).save(photos / f"{i}.png")
    cfg = DCGANConfig(data=str(photos))
    assert DCGAN.load_data(cfg).images.shape[-2:] == (64, 64) and cfg.image_size == 64
