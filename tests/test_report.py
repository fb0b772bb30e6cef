"""The evaluation's self-contained HTML report (checked in a real headless Chromium when Debian's
`chromium` and the `playwright` package are there) and the `gankit runs` table."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import gankit
from gankit import api, cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, idx_dir_module):
    run = tmp_path_factory.mktemp("r") / "ssgan"
    gankit.train(
        "ssgan",
        data="mnist",
        data_dir=str(idx_dir_module),
        labels=40,
        batch_size=32,
        epochs=2,
        out=str(run),
        progress=False,
    )
    api.evaluate(run)
    return run


@pytest.fixture(scope="module")
def idx_dir_module(tmp_path_factory):
    from conftest import make_idx_dir

    return make_idx_dir(tmp_path_factory.mktemp("idx"))


def test_report_html_is_self_contained(evaluated_run):
    page = (evaluated_run / "evaluation" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) >= 4  # confusion matrix, validation accuracy over training, loss curves, previews
    assert "Quality over training" in page and (evaluated_run / "monitored.png").is_file()
    assert "accuracy" in page and '"recipe"' not in page and "ssgan" in page
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from elsewhere


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_errors(evaluated_run):
    sync_api = pytest.importorskip("playwright.sync_api")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((evaluated_run / "evaluation" / "report.html").as_uri())
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        title = page.title()
        browser.close()
    assert not errors
    assert len(sizes) >= 3 and all(done and width > 0 for done, width in sizes)
    assert "ssgan" in title


def test_runs_table(evaluated_run, capsys):
    assert cli.main(["runs", str(evaluated_run.parent), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    steps = 2 * ((256 - 256 // 12) // 32)  # 2 epochs over the 256 images less the validation split
    assert row["recipe"] == "ssgan" and row["steps"] == steps and row["train_seconds"] > 0
    report = json.loads((evaluated_run / "evaluation" / "report.json").read_text())
    assert row["metric"] == "accuracy" and row["value"] == report["accuracy"]
    assert cli.main(["runs", str(evaluated_run.parent)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert cli.main(["runs", str(evaluated_run.parent / "nope")]) == 1
