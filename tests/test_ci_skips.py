"""In CI (`CI` set, as .ci/run runs), a test that skips for anything but missing hardware fails: the
suite must not pass green with an install step missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = """
import pytest

def test_needs_a_browser():
    pytest.skip("needs Debian's chromium")

def test_needs_a_gpu():
    pytest.skip("needs CUDA")

def test_runs():
    assert True
"""


def _run(tmp_path: Path, ci: bool, sample: str = SAMPLE) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(sample)
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


def test_in_ci_a_skip_for_a_missing_tool_fails_and_one_for_missing_hardware_does_not(tmp_path):
    local = _run(tmp_path, ci=False)
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout
    ci = _run(tmp_path, ci=True)
    assert ci.returncode == 1 and "1 failed, 1 passed, 1 skipped" in ci.stdout
    assert "skipped in CI, where what it needs is installed (needs Debian's chromium)" in ci.stdout


def test_in_ci_a_module_skipped_at_import_fails_too(tmp_path):
    sample = 'import pytest\n\npytest.importorskip("no_such_package_xyz")\n\n\ndef test_x():\n    pass\n'
    assert "1 skipped" in _run(tmp_path, ci=False, sample=sample).stdout  # outside CI: a skip
    ci = _run(tmp_path, ci=True, sample=sample)
    assert ci.returncode != 0 and "skipped in CI, where what it needs is installed" in ci.stdout
