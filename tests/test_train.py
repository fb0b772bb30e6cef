"""Training through the Python API on tiny data: outputs, learning, NaN guard, load/sample."""

import json

import pytest
import torch
from PIL import Image

import gankit
from gankit.engine.trainer import NonFiniteLoss
from gankit.errors import GankitError
from gankit.recipes.dcgan import DCGAN

FAST = dict(batch_size=32, lr=2e-4, beta1=0.5, log_every=4, checkpoint_every=1000, progress=False)


def test_run_directory_contents(idx_dir, tmp_path):
    s = gankit.train(
        "dcgan",
        data="mnist",
        data_dir=str(idx_dir),
        epochs=2,
        out=str(tmp_path / "run"),
        preview_every=1,
        keep_checkpoints=2,
        **FAST,
    )
    run = tmp_path / "run"
    assert s["steps"] == 16 and s["epochs_completed"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "dcgan" and cfg["image_size"] == 28 and cfg["channels"] == 1
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    assert all(r["loss_d"] > 0 and r["loss_g"] > 0 and 0 <= r["d_real"] <= 1 for r in records)
    grid = Image.open(run / "previews" / "epoch-0000.png")
    assert grid.size == (4 * 30 + 2, 4 * 30 + 2) and grid.mode == "L"  # 4x4 grid of 28 px
    assert (run / "previews" / "epoch-0001.png").exists()
    assert Image.open(run / "loss.png").size[0] > 100
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000016.safetensors"]


@pytest.mark.long(52)
def test_generator_learns_the_toy_distribution(idx_dir, tmp_path):
    """Toy data: bright squares in one of four quadrants. Before training, samples are grey noise;
    after 240 steps they must be far darker, with a bright square (87% of real pixels are < 0.1)."""

    def dark_fraction(images):
        return (images < 0.1).float().mean().item()

    # The plain recipe, whatever --diffaugment auto comes to mean for 256 images.
    run = str(tmp_path / "run")
    gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), epochs=30, out=run, diffaugment="none", **FAST)
    samples = gankit.sample(tmp_path / "run", 64, seed=1)
    assert samples.shape == (64, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    untrained = gankit.load(tmp_path / "run")
    untrained.load_state_dict(type(untrained)().state_dict())
    from gankit.recipes.dcgan import sample as draw

    assert dark_fraction(draw(untrained, 64)) < 0.2
    assert dark_fraction(samples) > 0.4  # 0.44-0.5 measured; CPU thread counts change the numerics
    quadrant_means = samples[:, 0, :14, :14].mean((1, 2)), samples[:, 0, 14:, 14:].mean((1, 2))
    assert max(q.max().item() for q in quadrant_means) > 0.5  # some sample has a bright square


def test_ema_generator_is_used_for_sampling(idx_dir, tmp_path):
    gankit.train(
        "dcgan", data="mnist", data_dir=str(idx_dir), epochs=1, out=str(tmp_path / "r"), ema=0.9, **FAST
    )
    recipe = gankit.api.load_recipe(tmp_path / "r")
    assert recipe.inference_module() is recipe.ema
    diff = [(a - b).abs().max() for a, b in zip(recipe.ema.parameters(), recipe.generator.parameters())]
    assert max(diff) > 0  # the average differs from the last weights


def first_norm(net: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize("recipe", ["dcgan", "cdcgan"])
def test_the_ema_generator_normalises_with_its_own_statistics(recipe, idx_dir, tmp_path):
    """update_ema copies the live generator's batch-norm statistics; the EMA generator users get has
    them recomputed from its own activations (standing statistics), reproducibly, without touching
    training randomness, the weights or the live generator, and again after further steps."""
    opts = dict(data="mnist", data_dir=str(idx_dir), epochs=2, ema=0.9, **FAST)
    gankit.train(recipe, out=str(tmp_path / "r"), **opts)
    r = gankit.api.load_recipe(tmp_path / "r")
    live = {k: v.clone() for k, v in r.generator.state_dict().items()}
    ema_weights = [p.clone() for p in r.ema.parameters()]
    rng = torch.get_rng_state()
    g = r.inference_module()
    assert g is r.ema and not any(m.training for m in g.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(ema_weights, r.ema.parameters()))
    assert all(torch.equal(v, r.generator.state_dict()[k]) for k, v in live.items())
    norm = first_norm(g)
    assert not torch.allclose(norm.running_mean, first_norm(r.generator).running_mean)
    # the first batch norm's mean is the mean of its input over the 16 x 64 standing latents
    seen = []
    hook = norm.register_forward_hook(lambda m, args, out: seen.append(args[0].float()))
    gen = torch.Generator().manual_seed(r.cfg.seed + 1)
    with torch.no_grad():
        for _ in range(r.STANDING_BATCHES):
            z = torch.randn(r.STANDING_BATCH_SIZE, r.cfg.latent_dim, generator=gen)
            g(z, *r.standing_conditions(r.STANDING_BATCH_SIZE, gen))
    hook.remove()
    torch.testing.assert_close(norm.running_mean, torch.cat(seen).mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert torch.equal(r.sample(8, seed=3), gankit.api.load_recipe(tmp_path / "r").sample(8, seed=3))
    r.attach_data(r.load_data(r.cfg))
    r.train_step(next(iter(r.batches.epoch(0))))  # copies the live statistics again ...
    assert torch.equal(norm.running_mean, first_norm(r.generator).running_mean)
    r.inference_module()  # ... and using the EMA generator recomputes them
    assert not torch.allclose(norm.running_mean, first_norm(r.generator).running_mean)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(idx_dir, tmp_path, monkeypatch):
    real_step = DCGAN.train_step
    calls = {"n": 0}

    def poisoned(self, batch):
        out = real_step(self, batch)
        calls["n"] += 1
        if calls["n"] >= 6:
            out["loss_g"] = out["loss_g"] * float("nan")
        return out

    monkeypatch.setattr(DCGAN, "train_step", poisoned)
    with pytest.raises(NonFiniteLoss, match="NaN or infinite at step 6"):
        gankit.train(
            "dcgan",
            data="mnist",
            data_dir=str(idx_dir),
            epochs=2,
            out=str(tmp_path / "r"),
            **{**FAST, "checkpoint_every": 4, "log_every": 8},
        )
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000004.safetensors"]


def test_colour_folder_trains_at_64px(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (80, 70), (30 * i, 100, 200 - 20 * i)).save(folder / f"{i}.png")
    s = gankit.train(
        "dcgan",
        data=str(folder),
        epochs=1,
        batch_size=4,
        out=str(tmp_path / "r"),
        progress=False,
        precision="fp32",
    )
    assert s["steps"] == 2
    g = gankit.load(tmp_path / "r")
    assert gankit.api.sample(tmp_path / "r", 2).shape == (2, 3, 64, 64) and g.latent_dim == 100


def test_same_seed_same_result(idx_dir, tmp_path):
    def weights(name, seed):
        gankit.train(
            "dcgan",
            data="mnist",
            data_dir=str(idx_dir),
            max_steps=5,
            out=str(tmp_path / name),
            seed=seed,
            **FAST,
        )
        return torch.cat([p.flatten() for p in gankit.load(tmp_path / name).parameters()])

    a, b, c = weights("a", 1), weights("b", 1), weights("c", 2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_hyper_parameters_are_named(idx_dir):
    with pytest.raises(GankitError, match="--batch-size 0: expected a positive integer"):
        gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), batch_size=0)
    with pytest.raises(GankitError, match="--image-size 48: expected one of 28, 32, 64"):
        gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), image_size=48)
    with pytest.raises(GankitError, match="--lr -1.0"):
        gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), lr=-1.0)
    with pytest.raises(GankitError, match="--precision 'fp8'"):
        gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), precision="fp8")


def test_tensorboard_logging_when_installed(idx_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), max_steps=8, out=str(tmp_path / "r"), **FAST)
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss_d")] == [4, 8]
    assert "preview" in events.Tags()["images"]
