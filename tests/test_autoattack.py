"""AutoAttack and its members (APGD-T, FAB-T, Square): the pieces against their definitions, the
ensemble against torchattacks 3.5.1 at the same protocol, and the gradient-masking checks on models
masked on purpose."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from gankit.attacks import APGD, APGDT, FAB, AutoAttack, ImageClassifier, Square
from gankit.attacks.checks import model_checks
from gankit.attacks.evaluate import robustness_curve
from gankit.attacks.fab import project_on_hyperplane
from gankit.attacks.square import window_fraction


def _data(n: int, seed: int):
    """10-class 8x8 images: a bright 4x4 block whose place is the class, on dim noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.4
    y = torch.randint(0, 10, (n,), generator=g)
    for i, q in enumerate(y.tolist()):
        r, c = divmod(q, 5)
        x[i, 0, r * 4 : r * 4 + 4, c : c + 4] += 0.45
    return x.clamp(0, 1), y


def _train(adversarial_eps: float = 0.0) -> ImageClassifier:
    torch.manual_seed(0)
    x, y = _data(2048, 0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    clf = ImageClassifier(net, [0.0], [1.0], None, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(300 if not adversarial_eps else 150):
        xb = x
        if adversarial_eps:  # PGD-5 adversarial training (Madry et al.)
            d = (torch.rand_like(x) * 2 - 1) * adversarial_eps
            for _ in range(5):
                d.requires_grad_(True)
                (g,) = torch.autograd.grad(nn.functional.cross_entropy(net((x + d).clamp(0, 1)), y), d)
                d = (d.detach() + 0.3 * adversarial_eps * g.sign()).clamp(-adversarial_eps, adversarial_eps)
            xb = (x + d).clamp(0, 1)
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), y).backward()
        opt.step()
    return clf.eval()


@pytest.fixture(scope="module")
def standard():
    return _train()


@pytest.fixture(scope="module")
def robust():
    return _train(adversarial_eps=0.1)


def _accuracy(clf, x, y) -> float:
    with torch.no_grad():
        return (clf(x).argmax(1) == y).float().mean().item()


# -- the pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_unconstrained_optimum_where_the_box_does_not_bind(norm):
    g = torch.Generator().manual_seed(0)
    p = torch.full((5, 12), 0.5)
    w = torch.randn(5, 12, generator=g)
    c = torch.randn(5, generator=g) * 0.05
    b = (w * p).sum(1) + c
    d = project_on_hyperplane(p, w, b, norm)
    if norm == "linf":
        expected = torch.sign(w) * (c / w.abs().sum(1))[:, None]
    else:
        expected = w * (c / (w * w).sum(1))[:, None]
    assert torch.allclose(d, expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_reaches_the_hyperplane_inside_the_box_no_farther_than_the_reference(norm):
    g = torch.Generator().manual_seed(1)
    p = torch.rand(64, 30, generator=g)
    w = torch.randn(64, 30, generator=g)
    w[:, :3] = 0.0  # coordinates the hyperplane ignores stay put
    target = torch.rand(64, 30, generator=g)  # a point of the box on each hyperplane: all feasible
    b = (w * target).sum(1)
    d = project_on_hyperplane(p, w, b, norm)
    q = p + d
    assert torch.allclose((w * q).sum(1), b, atol=1e-4)
    assert q.min() >= -1e-6 and q.max() <= 1 + 1e-6
    assert (d[:, :3] == 0).all()
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    bound = (target - p).abs().amax(1) if norm == "linf" else (target - p).norm(dim=1)
    assert (size <= bound + 1e-5).all()  # no farther than a known feasible point
    fab = pytest.importorskip("torchattacks.attacks.fab")
    ref = (fab.projection_linf if norm == "linf" else fab.projection_l2)(p, w, b)
    ref_size = ref.abs().amax(1) if norm == "linf" else ref.norm(dim=1)
    assert (size <= ref_size + 1e-4).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_cut_short_stops_before_the_hyperplane_inside_the_box(norm):
    # A hyperplane near the box's far corner, so that most coordinates saturate on the way, and
    # one Newton step: each row moves towards it, stays inside the box and does not pass it; with
    # the default budget it arrives.
    g = torch.Generator().manual_seed(2)
    p = torch.rand(32, 50, generator=g)
    w = torch.randn(32, 50, generator=g)
    b = 0.1 * (w * p).sum(1) + 0.9 * w.clamp_min(0).sum(1)  # 90% of the way to the corner
    before = (w * p).sum(1)
    for max_iter, close in ((1, False), (64, True)):
        q = p + project_on_hyperplane(p, w, b, norm, max_iter=max_iter)
        after = (w * q).sum(1)
        assert q.min() >= 0 and q.max() <= 1
        assert ((after - before) * (b - before) >= -1e-5).all()  # moved towards the hyperplane
        assert ((after - b).abs() <= (before - b).abs() + 1e-5).all()  # and not past it
        assert torch.allclose(after, b, atol=1e-4) == close


def test_projection_that_cannot_reach_moves_every_coordinate_to_the_box():
    p = torch.full((1, 4), 0.5)
    w = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    d = project_on_hyperplane(p, w, torch.tensor([10.0]), "l2")  # w.q <= 2 inside the box
    assert torch.allclose(p + d, torch.tensor([[1.0, 0.0, 1.0, 0.5]]))


def test_square_window_schedule_is_the_paper_s():
    assert window_fraction(0.8, 0, 10000) == 0.8 and window_fraction(0.8, 11, 10000) == 0.4
    assert window_fraction(0.8, 600, 10000) == 0.8 / 16 and window_fraction(0.8, 9000, 10000) == 0.8 / 512
    assert window_fraction(0.8, 500, 5000) == 0.8 / 16  # rescaled to the budget


def test_fab_finds_the_nearest_boundary_of_a_linear_model():
    """For a linear two-class model the smallest move to the boundary is d* = |margin| / ||w||_dual:
    FAB breaks every image within 1.01 d*, and nothing can within 0.99 d*."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 2)
    dw = (lin.weight[0] - lin.weight[1]).detach()
    with torch.no_grad():  # the boundary through the grey image: near enough for the box not to bind
        lin.bias[0] = lin.bias[1] - 0.5 * dw.sum()
    clf = ImageClassifier(nn.Sequential(nn.Flatten(), lin), [0.0], [1.0], None, 1).eval()
    x = 0.45 + 0.1 * torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = clf(x)
    y = z.argmax(1)
    margin = (z[:, 0] - z[:, 1]).abs()
    for norm, dual in (("linf", dw.abs().sum()), ("l2", dw.norm())):
        nearest = margin / dual
        for i in range(len(x)):
            xi, yi = x[i : i + 1], y[i : i + 1]
            near = FAB(clf, 1.01 * float(nearest[i]), steps=20, norm=norm, n_targets=1)(xi, yi)
            assert _accuracy(clf, near, yi) == 0, (norm, i)
            far = FAB(clf, 0.99 * float(nearest[i]), steps=20, norm=norm, n_targets=1)(xi, yi)
            assert _accuracy(clf, far, yi) == 1, (norm, i)


def test_apgdt_and_fab_break_at_least_what_apgd_ce_does(standard):
    x, y = _data(150, 1)
    ce = _accuracy(standard, APGD(standard, 0.1, early_stop=True)(x, y), y)
    assert _accuracy(standard, APGDT(standard, 0.1)(x, y), y) <= ce
    assert _accuracy(standard, FAB(standard, 0.1)(x, y), y) <= ce + 0.02
    assert ce < 0.95


def test_square_needs_no_gradient(standard):
    """Behind an input layer whose gradient is zero, the gradient attacks are blind; Square is not."""
    masked = ImageClassifier(nn.Sequential(Quantise(), standard.model), [0.0], [1.0], None, 1).eval()
    x, y = _data(100, 2)
    clean = _accuracy(masked, x, y)
    assert _accuracy(masked, APGD(masked, 0.15)(x, y), y) == clean
    assert _accuracy(masked, Square(masked, 0.15, steps=300)(x, y), y) < clean - 0.2


# -- the ensemble ---------------------------------------------------------------------------------


def test_found_by_and_breakdown_account_for_every_image(standard):
    x, y = _data(120, 3)
    y[:5] = (y[:5] + 1) % 10  # five wrong labels: misclassified before any attack
    aa = AutoAttack(standard, 0.1, steps=20, queries=200)
    r = aa.run(x, y)
    counts = aa.breakdown
    assert sum(counts.values()) == len(x) and counts["clean"] >= 5
    robust = torch.tensor([f is None for f in r.found_by])
    assert torch.equal(robust, r.adv_pred == y)
    assert counts["robust"] == int(robust.sum())
    assert aa.protocol["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]


def test_each_member_attacks_every_survivor_before_the_next_member_starts(standard, monkeypatch):
    """With a batch size, the survivors of all batches are pooled, as the reference implementation
    does: the later members see full batches, not a few images from each batch."""
    x, y = _data(120, 3)
    calls: list[tuple[str, int]] = []
    members = AutoAttack.components

    def logged(self):
        out = members(self)
        for name, atk in out:
            run = atk.perturb

            def perturb(xb, yb, tb, name=name, run=run):
                calls.append((name, len(xb)))
                return run(xb, yb, tb)

            atk.perturb = perturb
        return out

    monkeypatch.setattr(AutoAttack, "components", logged)
    aa = AutoAttack(standard, 0.1, steps=20, queries=200, batch_size=50)
    aa.run(x, y)
    names = [n for n, _ in calls]
    assert names == sorted(names, key=["apgd-ce", "apgd-t", "fab-t", "square"].index)  # one pass each
    assert [b for n, b in calls if n == "apgd-ce"] == [40, 40, 40]  # as even as 50 at most allows
    counts = aa.breakdown
    for i, name in enumerate(["apgd-t", "fab-t", "square"]):
        left = len(x) - counts["clean"] - sum(counts[m] for m in ["apgd-ce", "apgd-t", "fab-t"][: i + 1])
        sizes = [b for n, b in calls if n == name]
        # All survivors in the fewest batches: ~99 here, which per batch of 40 would take three.
        assert sum(sizes) == left and len(sizes) == -(-left // 50) and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("which", ["standard", "robust"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_robust_accuracy_within_one_point_of_torchattacks(request, which, norm):
    """The same protocol as the authors' standard version: 100 iterations, 9 targets, 5,000 queries
    (torchattacks' AutoAttack class runs 10 iterations; its members are set to 100 here)."""
    torchattacks = pytest.importorskip("torchattacks")
    from torchattacks.wrappers.multiattack import MultiAttack

    clf = request.getfixturevalue(which)
    eps = 0.1 if norm == "linf" else 0.5
    x, y = _data(150, 4)
    ours = _accuracy(clf, AutoAttack(clf, eps, norm=norm)(x, y), y)
    n = "Linf" if norm == "linf" else "L2"
    theirs_attack = MultiAttack(
        [
            torchattacks.APGD(clf, norm=n, eps=eps, steps=100, loss="ce", seed=0),
            torchattacks.APGDT(clf, norm=n, eps=eps, steps=100, n_classes=10, seed=0),
            torchattacks.FAB(clf, norm=n, eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0),
            torchattacks.Square(clf, norm=n, eps=eps, n_queries=5000, seed=0),
        ]
    )
    theirs = _accuracy(clf, theirs_attack(x, y), y)
    assert abs(ours - theirs) <= 0.01 + 1e-9, (ours, theirs)
    assert 0.1 < ours < _accuracy(clf, x, y)  # a real test: some images broken, some robust


# -- gradient-masking checks --------------------------------------------------------------------


class Quantise(nn.Module):
    """8 gray levels; its gradient is zero everywhere."""

    def forward(self, x):
        return torch.round(x * 7) / 7


class Noise(nn.Module):
    """Random noise at inference: a randomised defence."""

    def forward(self, x):
        return x + 0.05 * torch.randn_like(x)


def _wrap(clf, before=None, after=None):
    layers = [m for m in (before, clf.model, after) if m is not None]
    return ImageClassifier(nn.Sequential(*layers), [0.0], [1.0], None, 1).eval()


def test_no_warning_for_a_plain_model(standard):
    assert model_checks(standard, _data(50, 5)[0]) == []


@pytest.mark.parametrize(
    "layers,check",
    [
        ((Noise(), None), "randomised"),
        ((None, nn.Softmax(1)), "probabilities"),
        ((Quantise(), None), "zero gradients"),
    ],
    ids=["noise-layer", "softmax-head", "quantising-input"],
)
def test_each_masked_model_is_flagged(standard, layers, check):
    masked = _wrap(standard, *layers)
    found = [w["check"] for w in model_checks(masked, _data(50, 5)[0])]
    assert check in found


def test_square_success_where_gradients_failed_is_flagged(standard):
    masked = _wrap(standard, Quantise())
    x, y = _data(60, 6)
    report = robustness_curve(masked, x, y, [0.15], ["autoattack"], batch_size=30, steps=10, queries=300)
    checks = {w["check"] for w in report["warnings"]}
    assert {"zero gradients", "square"} <= checks
    assert report["rows"][0]["breakdown"]["square"] > 0


# -- the command line ------------------------------------------------------------------------------


def _gankit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gankit", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, standard):
    """The standard toy model as a TorchScript file with its side file, and a labelled folder."""
    from PIL import Image

    d = tmp_path_factory.mktemp("aa")
    torch.jit.trace(standard.model, torch.rand(1, 1, 8, 8)).save(str(d / "toy.pt"))
    meta = {
        "mean": [0.0],
        "std": [1.0],
        "input_size": 8,
        "channels": 1,
        "class_names": [f"c{i}" for i in range(10)],
    }
    (d / "toy.pt.json").write_text(json.dumps(meta))
    x, y = _data(30, 7)
    for i, (img, label) in enumerate(zip(x, y.tolist())):
        (d / "data" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0] * 255).round().byte().numpy()).save(d / "data" / str(label) / f"{i}.png")
    return d


def test_evaluate_autoattack_reports_protocol_and_breakdown(scripted):
    r = _gankit(
        "evaluate",
        "--attack",
        "autoattack",
        "--model",
        "toy.pt",
        "--data",
        "data",
        "--eps",
        "0,0.1",
        "--steps",
        "20",
        "-o",
        "rob",
        "--json",
        cwd=scripted,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((scripted / "rob" / "robustness.json").read_text())
    aa = report["protocol"]["autoattack"]
    assert aa["version"] == "standard" and aa["steps"] == 20 and aa["queries"] == 5000
    assert report["protocol"]["norm"] == "linf" and report["protocol"]["count"] == 30
    row = [r for r in report["rows"] if r["eps"] == 0.1][0]
    assert sum(row["breakdown"].values()) == 30
    assert row["robust_accuracy"] == pytest.approx(row["breakdown"]["robust"] / 30)
    page = (scripted / "rob" / "robustness.html").read_text()
    assert "Protocol" in page and "apgd-ce" in page
    assert "apgd-ce" in (scripted / "rob" / "robustness.csv").read_text()


def test_attack_autoattack_names_the_attack_that_broke_each_image(scripted):
    r = _gankit(
        "attack",
        "autoattack",
        "--model",
        "toy.pt",
        "--image",
        "data/3",
        "--eps",
        "0.2",
        "--steps",
        "20",
        "-o",
        "atk",
        cwd=scripted,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((scripted / "atk" / "report.json").read_text())
    assert report["protocol"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    results = [x for img in report["images"] for x in img["results"]]
    assert all(x["broken_by"] in ("apgd-ce", "apgd-t", "fab-t", "square", None) for x in results)
    assert any(x["broken_by"] for x in results) and "fooled (by " in r.stdout


def test_autoattack_refuses_a_target(scripted):
    r = _gankit(
        "attack", "autoattack", "--model", "toy.pt", "--image", "data/3", "--target", "2", cwd=scripted
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "gankit: error: autoattack is untargeted: leave out --target"
    assert not (scripted / "attack" / "report.json").exists()
