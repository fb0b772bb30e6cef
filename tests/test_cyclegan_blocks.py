"""CycleGAN building blocks: the ResNet generator and the 50-image history pool."""

import pytest
import torch

from gankit.nn.pool import ImagePool
from gankit.nn.resnet import ResnetGenerator


def test_resnet_generator_shapes_and_blocks():
    g = ResnetGenerator(3, 3, n_blocks=9).eval()
    assert sum(type(m).__name__ == "ResidualBlock" for m in g.modules()) == 9
    with torch.no_grad():
        for h, w in ((64, 64), (64, 96)):
            y = g(torch.randn(1, 3, h, w))
            assert y.shape == (1, 3, h, w) and y.abs().max() <= 1
        assert ResnetGenerator(1, 3, n_blocks=2)(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.randn(1, 3, 30, 32))


def test_pool_fills_then_mixes_old_and_new_with_probability_half():
    torch.manual_seed(0)
    pool = ImagePool(50)
    first = torch.arange(50.0).view(50, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: everything passes through
    old_returned, trials = 0, 4000
    for k in range(trials // 10):
        new = torch.full((10, 1, 1, 1), 1000.0 + k)
        out = pool.query(new)
        assert out.shape == new.shape
        old_returned += int((out != new).sum())
    assert abs(old_returned / trials - 0.5) < 0.03  # the paper's 1/2
    assert len(pool.images) == 50
    state = pool.state()
    other = ImagePool(50)
    other.load(state)
    assert all(torch.equal(a, b) for a, b in zip(other.images, pool.images))
    assert torch.equal(ImagePool(0).query(first), first)


def test_unpaired_domains_load_and_batch(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from gankit.data.unpaired import UnpairedBatches, load_domains
    from gankit.errors import GankitError

    rng = np.random.default_rng(0)
    for folder, n in (("trainA", 3), ("trainB", 40)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).save(
                tmp_path / folder / f"{i}.png"
            )
    a, b = load_domains(tmp_path, "train", 16)
    assert a.shape == (3, 3, 16, 16) and b.shape == (40, 3, 16, 16)
    assert "very unequal" in capsys.readouterr().err
    batches = UnpairedBatches(a, b, 2, 0, torch.device("cpu"))
    assert len(batches) == 20
    all_b = torch.cat([y for _, y in batches.epoch(0)])
    assert len({t.sum().item() for t in all_b}) == 40  # every B image once per epoch
    tail = list(batches.epoch(3, 15))
    assert all(torch.equal(x, y) for x, y in zip(tail[0], list(batches.epoch(3))[15]))
    Image.new("L", (20, 20)).save(tmp_path / "trainA" / "gray.png")
    with pytest.raises(GankitError, match="gray.png: grayscale, but .* is colour"):
        load_domains(tmp_path, "train", 16)
    for p in (tmp_path / "trainB").iterdir():
        p.unlink()
    (tmp_path / "trainA" / "gray.png").unlink()
    with pytest.raises(GankitError, match="trainB: domain B holds no images"):
        load_domains(tmp_path, "train", 16)
