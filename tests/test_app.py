"""`gankit serve`: the web app's service layer (directly) and every tab end to end in a real headless
Chromium (Debian's `chromium` driven by the `playwright` package; no browser download)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_idx_dir
from PIL import Image

import gankit
from gankit import api, cli
from gankit.errors import GankitError

gr = pytest.importorskip("gradio")
from gankit.app import Service, _page_errors, find_runs, serve, stop  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SMALL = dict(progress=False, precision="fp32", device="cpu", log_every=5)


def _photo(name: str) -> Path:
    skdata = pytest.importorskip("skimage.data")
    return Path(skdata.__file__).parent / name


def _has_builtin() -> bool:
    from gankit.app import builtin_available

    return builtin_available()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs of each kind the app serves: dcgan, cdcgan (classes), pix2pix, cyclegan, ssgan."""
    root = tmp_path_factory.mktemp("app")
    idx = make_idx_dir(root / "idx")
    mnist = dict(data="mnist", data_dir=str(idx), epochs=1, batch_size=64, **SMALL)
    gankit.train("dcgan", out=str(root / "runs" / "dcgan"), **mnist)
    gankit.train("cdcgan", out=str(root / "runs" / "cdcgan"), **mnist)
    gankit.train("ssgan", out=str(root / "runs" / "ssgan"), labels=40, **mnist)
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            a = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            (root / "pairs" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(root / "pairs" / split / f"{i}.png")
    tiny = dict(image_size=64, ngf=8, ndf=8, max_steps=2, **SMALL)  # translators: 2 steps, 8 filters
    gankit.train("pix2pix", out=str(root / "runs" / "pix2pix"), data=str(root / "pairs"), **tiny)
    for split, n in (("train", 3), ("test", 1)):
        for dom in ("A", "B"):
            (root / "domains" / f"{split}{dom}").mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                Image.fromarray(a if dom == "A" else 255 - a).save(
                    root / "domains" / f"{split}{dom}" / f"{i}.png"
                )
    cyclegan = dict(data=str(root / "domains"), load_size=72)
    gankit.train("cyclegan", out=str(root / "runs" / "cyclegan"), **cyclegan, **tiny)
    api.evaluate(root / "runs" / "ssgan")
    return root / "runs"


@pytest.fixture
def service(runs, tmp_path):
    return Service([runs], tmp_path / "work", max_pixels=100_000, builtin=_has_builtin())


def test_runs_are_found_with_what_they_offer(runs, tmp_path):
    found = {Path(r.path).name: r for r in find_runs([runs])}
    assert set(found) == {"dcgan", "cdcgan", "pix2pix", "cyclegan", "ssgan"}
    assert found["cdcgan"].classes == tuple(str(i) for i in range(10)) and found["dcgan"].classes is None
    assert "translate" in found["pix2pix"].capabilities and "classify" in found["ssgan"].capabilities
    with pytest.raises(GankitError, match="not a gankit run directory"):
        find_runs([tmp_path])


def test_generate_grid_zip_and_the_same_images_as_the_cli(service, runs):
    grid, archive = service.generate(service.id_of(runs / "dcgan"), seed=3, count=5)
    assert Image.open(grid).size[0] > 3 * 28
    with zipfile.ZipFile(archive) as z:
        names = sorted(z.namelist())
        assert names == [f"sample-{i:04d}.png" for i in range(5)]
        first = np.asarray(Image.open(z.open(names[0])), np.float32) / 255
    same = api.sample(runs / "dcgan", 5, seed=3)[0, 0].numpy()
    assert np.abs(first - same).max() <= 0.5 / 255 + 1e-6  # the CLI's image, rounded to 8 bits
    grid, _ = service.generate(service.id_of(runs / "cdcgan"), seed=0, count=8, label="2")
    with pytest.raises(GankitError, match="expected 1..1024"):
        service.generate(service.id_of(runs / "dcgan"), seed=0, count=0)
    strip = service.interpolate(service.id_of(runs / "dcgan"), 0, 1, 6)
    assert Image.open(strip).size == (6 * 30 + 2, 32)


def test_only_the_given_runs_are_read_and_a_vanished_run_is_a_message(service, runs, tmp_path):
    with pytest.raises(GankitError, match="not one of the runs"):
        service.generate(str(tmp_path), 0, 4)
    with pytest.raises(GankitError, match="not one of the runs"):  # a classifier asked to generate
        service.translate(service.id_of(runs / "ssgan"), str(_photo("coffee.png")))
    moved = tmp_path / "moved"
    shutil.move(runs / "dcgan", moved)
    try:
        with pytest.raises(GankitError, match="run directory is gone"):
            service.generate(service.id_of(runs / "dcgan"), 0, 4)
        assert any("gone" in str(row) for row in service.runs_table()[1])
    finally:
        shutil.move(moved, runs / "dcgan")


def test_uploads_must_be_images_within_the_pixel_limit(service, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(GankitError, match=r"notes.png: not a PNG, JPEG, WebP, BMP, TIFF or GIF image"):
        service.check_upload(str(text))
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(big)
    with pytest.raises(
        GankitError, match=r"big.png: 400x300 = 0.1 MP is over the limit of 0.1 MP \(gankit serve"
    ):
        service.check_upload(str(big))


def test_translate_keeps_the_upload_size(service, runs, tmp_path):
    src = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(src)
    shown, out = service.translate(service.id_of(runs / "pix2pix"), str(src))
    assert Image.open(shown).size == Image.open(out).size == (70, 45)
    assert Path(out).is_relative_to(service.workdir)


def test_cyclegan_translates_both_ways(service, runs, tmp_path):
    src = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(src)
    run = service.id_of(runs / "cyclegan")
    to_b, to_a = (np.asarray(Image.open(service.translate(run, str(src), to)[1])) for to in ("B", "A"))
    assert to_b.shape == to_a.shape == (30, 50, 3) and not np.array_equal(to_b, to_a)


def test_another_address_than_this_machine_needs_a_login(runs, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("GANKIT_SERVE_AUTH", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["serve", str(runs / "dcgan"), "--host", "0.0.0.0", "--port", str(_free_port())]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "gankit: error: --host 0.0.0.0: serving beyond this machine needs a login: --auth USER:PASS "
        "(or --auth auto for a generated password)"
    )
    for bad in ("alice", "alice:", ":pw"):
        assert cli.main(["serve", str(runs / "dcgan"), "--host", "0.0.0.0", "--auth", bad]) == 1
        assert "expected USER:PASS" in capsys.readouterr().err
    assert not list(tmp_path.glob("gankit-serve-*"))  # refused before anything was made


def test_with_a_login_another_address_is_served_to_those_who_log_in(runs, capsys):
    httpx = pytest.importorskip("httpx")
    before = os.environ.get("GRADIO_TEMP_DIR")
    port = _free_port()
    page, url, workdir = serve([runs / "dcgan"], host="0.0.0.0", port=port, auth="auto", block=False)
    try:
        password = capsys.readouterr().err.split("with password ")[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/config").status_code == 401
        with httpx.Client(base_url=base) as client:
            assert client.post("/login", data={"username": "gankit", "password": "wrong"}).status_code == 400
            client.post("/login", data={"username": "gankit", "password": password})
            assert client.get("/config").status_code == 200
    finally:
        stop(page, workdir)
        _restore_upload_dir(before)


def test_only_this_server_s_host_names_no_paths_no_share_link_and_an_upload_limit(runs, monkeypatch):
    """DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1 sends Host:
    evil.example; refused before Gradio sees it. The page names runs by opaque ids, GRADIO_SHARE does
    not open a public link, and an upload over --max-upload-mb is refused by the server."""
    httpx = pytest.importorskip("httpx")
    before = os.environ.get("GRADIO_TEMP_DIR")
    monkeypatch.setenv("GRADIO_SHARE", "true")
    port = _free_port()
    page, url, workdir = serve(
        [runs], port=port, block=False, allowed_host=["gankit.lan"], max_upload_mb=0.01
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for host, status in (
            ("evil.example", 400),
            (f"evil.example:{port}", 400),
            (f"127.0.0.1:{port}", 200),
            (f"localhost:{port}", 200),
            (f"gankit.lan:{port}", 200),
        ):
            assert httpx.get(f"{base}/config", headers={"Host": host}).status_code == status, host
        assert "is not served here" in httpx.get(f"{base}/", headers={"Host": "evil.example"}).text
        config = httpx.get(f"{base}/config").text
        assert str(runs.resolve()) not in config and "run-" in config
        assert page.share is False and page.share_url is None
        small, big = b"x" * 1000, b"x" * 20_000
        for body, ok in ((small, True), (big, False)):
            r = httpx.post(f"{base}/gradio_api/upload", files={"files": ("a.png", body, "image/png")})
            assert (r.status_code == 200) is ok, r.text
    finally:
        stop(page, workdir)
        _restore_upload_dir(before)


@pytest.mark.parametrize("when", ["as soon as its folder exists", "once it answers"])
def test_sigterm_removes_the_app_s_folder_as_ctrl_c_does(runs, tmp_path, when):
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gankit", "serve", str(runs / "dcgan"), "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if when.startswith("as soon") and list(tmp_path.glob("gankit-serve-*")):
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/config").status_code == 200:
                    break
            time.sleep(0.05)
        assert list(tmp_path.glob("gankit-serve-*")), "the app's folder exists while it serves"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert not list(tmp_path.glob("gankit-serve-*"))


def test_files_outside_the_run_and_foreign_reports_are_not_served(runs, tmp_path, capsys):
    run = tmp_path / "copied"
    shutil.copytree(runs / "ssgan", run)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    (run / "loss.png").unlink()
    (run / "loss.png").symlink_to(secret)
    for p in (run / "previews").glob("*.png"):
        p.unlink()
        p.symlink_to(secret)
    (tmp_path / "theirs.json").write_text(json.dumps({"lines": ["the secret"]}))
    (run / "evaluation" / "report.json").unlink()
    (run / "evaluation" / "report.json").symlink_to(tmp_path / "theirs.json")
    service = Service([run], tmp_path / "work", builtin=False)
    preview, loss, text = service.run_details(service.id_of(run))
    assert preview is None and loss is None and "secret" not in text
    (run / "evaluation" / "report.json").unlink()
    (run / "evaluation" / "report.json").write_text(json.dumps({"tool": "other", "metrics": {"fid": 3.0}}))
    service = Service([tmp_path], tmp_path / "work2", builtin=False)  # starts, though the report is foreign
    assert service.runs_table()[1][0][5] == "unreadable report"
    assert "cannot be read" not in service.run_details(service.id_of(run))[2]
    assert cli.main(["runs", str(tmp_path)]) == 0
    assert "unreadable report" in capsys.readouterr().out
    (run / "evaluation" / "report.json").write_text("[1, 2]")
    assert "cannot be read" in service.run_details(service.id_of(run))[2]


def test_run_ids_messages_and_logs_say_no_server_path(service, runs, caplog, monkeypatch):
    ids = [value for _, value in service.choices("sample") + service.choices("translate")]
    assert ids and all(i.startswith("run-") and "/" not in i for i in ids)
    path = str((runs / "dcgan").resolve())

    def broken():
        raise RuntimeError(f"weights in {path}/checkpoints do not fit\nsecond line")

    from gankit.app import log

    monkeypatch.setattr(log, "propagate", True)  # serve() keeps the app's log off the root logger
    with caplog.at_level("ERROR", logger="gankit.app"), pytest.raises(gr.Error) as e:
        _page_errors(broken, scrub=service.scrub)()
    ref = e.value.message.split("(server log: ")[1].rstrip(")")
    assert e.value.message == f"RuntimeError: weights in dcgan/checkpoints do not fit (server log: {ref})"
    (record,) = caplog.records
    assert ref in record.getMessage() and record.exc_info and path in str(record.exc_info[1])
    with pytest.raises(gr.Error) as e:  # a user error is one line, with the run's name only
        _page_errors(lambda: service.run("nope"), scrub=service.scrub)()
    assert e.value.message == "nope: not one of the runs this app serves for this tab"


def test_results_expire_and_uploads_have_a_size_limit(runs, tmp_path):
    service = Service(
        [runs / "dcgan"], tmp_path / "work", builtin=False, max_upload_bytes=1000, results_ttl=0.5
    )
    first = service.fresh_dir("generate")
    time.sleep(1.1)
    second = service.fresh_dir("generate")
    assert not first.exists() and second.exists()
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    with pytest.raises(GankitError, match=r"big.png: 0.0 MB is over this app's upload limit of 0 MB"):
        service.check_upload(str(big))


def test_uploads_of_other_formats_never_reach_ghostscript(service, runs, tmp_path, fake_gs):
    eps = tmp_path / "photo.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(
        GankitError, match="photo.png: its content is PostScript/EPS, not an image gankit reads"
    ):
        service.check_upload(str(eps))
    with pytest.raises(GankitError, match="photo.png: its content is PostScript/EPS"):
        service.classify(service.id_of(runs / "ssgan"), str(eps))
    with pytest.raises(GankitError, match="photo.png: its content is PostScript/EPS"):
        service.translate(service.id_of(runs / "pix2pix"), str(eps))
    assert not fake_gs.exists()


def test_one_client_cannot_fill_the_queue():
    import asyncio

    from gankit.app_guard import Guard

    sent = []

    async def app(scope, receive, send):
        sent.append("app")

    async def send(message):
        sent.append(message)

    waiting = {"10.0.0.5": 8, "127.0.0.1": 2}
    guard = Guard(app, {"127.0.0.1"}, per_client=8, queued=lambda c: waiting.get(c, 0))
    for client, expect in (("10.0.0.5", 429), ("127.0.0.1", "app")):
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/gradio_api/queue/join",
            "headers": [(b"host", b"127.0.0.1:7860")],
            "client": (client, 5000),
        }
        asyncio.run(guard(scope, None, send))
        assert (sent[0]["status"] if isinstance(sent[0], dict) else sent[0]) == expect


def test_classify_with_a_run_and_the_runs_tab(service, runs):
    top = service.classify(service.id_of(runs / "ssgan"), str(_toy_png(runs.parent / "toy.png")))
    conf = list(top.values())  # the 5 most likely of the 10 classes, most likely first
    assert len(top) == 5 and 0 < sum(conf) <= 1 and conf == sorted(conf, reverse=True)
    headers, rows = service.runs_table()
    assert headers[0] == "run" and len(rows) == 5 and any(r[5] == "accuracy" for r in rows)
    preview, loss, text = service.run_details(service.id_of(runs / "ssgan"))
    assert Image.open(preview) and Image.open(loss) and "accuracy" in text.lower()


def _toy_png(path: Path) -> Path:
    a = np.zeros((28, 28), np.uint8)
    a[2:12, 2:12] = 230  # the toy data's class 0: a square top-left
    Image.fromarray(a).save(path)
    return path


def test_sweep_yields_a_row_per_epsilon_and_failures_become_one_line_messages(service, runs, tmp_path):
    toy = str(_toy_png(tmp_path / "toy.png"))
    tables = list(service.sweep(service.id_of(runs / "ssgan"), "bim", 2, toy, steps=2))
    assert [len(t) for t in tables] == [1, 2] and [r[0] for r in tables[-1]] == ["1/255", "2/255"]

    def broken(x):
        raise RuntimeError("weights do not fit\nsecond line")

    with pytest.raises(gr.Error) as e:
        _page_errors(broken)(1)
    assert e.value.message.startswith("RuntimeError: weights do not fit (server log: ")
    with pytest.raises(gr.Error, match="choose a run first"):
        list(_page_errors(service.sweep)(None, "fgsm", 1, toy))


def test_autoattack_in_the_app_names_the_attack_that_broke_the_image(service, runs, tmp_path):
    toy = str(_toy_png(tmp_path / "toy.png"))
    r = service.attack(service.id_of(runs / "ssgan"), "autoattack", 64, toy)
    assert r["report"]["protocol"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert r["after"]["success"] == (r["after"]["broken_by"] is not None)
    with pytest.raises(GankitError, match="untargeted"):
        service.attack(service.id_of(runs / "ssgan"), "autoattack", 4, toy, target="1")


def test_serve_refuses_bad_options_in_one_line(capsys, tmp_path):
    assert cli.main(["serve", str(tmp_path), "--port", "70000"]) == 1
    assert cli.main(["serve", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("gankit: error: --port 70000") and "not a gankit run directory" in err[1]


# -- in a real browser ---------------------------------------------------------------------------------
def _restore_upload_dir(before: str | None) -> None:
    """serve() points Gradio's upload folder into its own; put the variable back for other tests."""
    if before is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(runs):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    before = os.environ.get("GRADIO_TEMP_DIR")
    page, url, workdir = serve([runs], port=_free_port(), max_pixels=2_000_000, block=False)
    assert url.startswith("http://127.0.0.1:")  # this machine only, by default
    yield url, workdir
    stop(page, workdir)
    _restore_upload_dir(before)
    assert not workdir.exists()  # uploads and results removed with the app


@pytest.fixture
def browser_page(app):
    from playwright.sync_api import sync_playwright

    url, _ = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("text=gankit")
        yield page
        browser.close()
        assert not errors, errors


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _upload(page, elem_id: str, path: Path) -> None:
    clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():  # a file is there already: remove it, as a user would, to get the drop zone back
        clear.first.click()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"#{elem_id} [aria-label='{path.name}']")


def _download(page, elem_id: str, dest: Path) -> Path:
    with page.expect_download() as d:
        page.locator(f"#{elem_id} a").first.click()
    d.value.save_as(dest)
    return dest


def test_browser_attack_fgsm_at_4_over_255(browser_page, app, tmp_path):
    if not _has_builtin():
        pytest.skip("needs gankit[imagenet]")
    page = browser_page
    photo = tmp_path / "coffee224.png"
    Image.open(_photo("coffee.png")).convert("RGB").resize((224, 224)).save(photo)
    _tab(page, "Attack")
    assert page.locator("#attack-eps input[type=number]").input_value() == "4"
    _upload(page, "attack-upload", photo)
    page.click("#attack-go")
    page.wait_for_selector("#attack-result >> text=after:", timeout=120_000)
    text = page.locator("#attack-result").inner_text()
    assert "before: espresso" in text
    saved = _download(page, "attack-file", tmp_path / "adv.png")
    adv = np.asarray(Image.open(saved).convert("RGB"), np.int16)
    orig = np.asarray(Image.open(photo), np.int16)
    assert adv.shape == orig.shape == (224, 224, 3)
    assert np.abs(adv - orig).max() <= 4 and np.abs(adv - orig).max() >= 3  # inside the ball, and used
    label = text.split("after:")[1].split("(")[0].strip()
    top = Service([], tmp_path / "w").classify("efficientnet-lite0", str(saved), top=1)
    assert label == next(iter(top))  # the label shown is the downloaded PNG's


def test_browser_generate_by_class_and_interpolate(browser_page, tmp_path):
    page = browser_page
    page.get_by_label("run").first.click()
    page.get_by_role("option", name="cdcgan (cdcgan)").click()
    page.get_by_label("class").click()
    page.get_by_role("option", name="2", exact=True).click()
    page.click("#generate-go")
    page.wait_for_selector("#generate-files [aria-label='samples.zip']", timeout=60_000)
    archive = _download(page, "generate-files", tmp_path / "grid.png")
    assert Image.open(archive).size[0] > 28
    page.click("#interpolate-go")
    page.wait_for_selector("#interpolate-strip img", timeout=60_000)


def test_browser_translate_side_by_side(browser_page, tmp_path):
    page = browser_page
    src = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(src)
    _tab(page, "Translate")
    _upload(page, "translate-upload", src)
    page.click("#translate-go")
    page.wait_for_selector("#translate-output img", timeout=60_000)
    page.wait_for_selector("#translate-input img")
    out = _download(page, "translate-file", tmp_path / "out.png")
    assert Image.open(out).size == (90, 50)


def test_browser_classify_top5(browser_page, app):
    if not _has_builtin():
        pytest.skip("needs gankit[imagenet]")
    page = browser_page
    _tab(page, "Classify")
    _upload(page, "classify-upload", _photo("coffee.png"))
    page.click("#classify-go")
    page.wait_for_selector("#classify-result >> text=espresso", timeout=60_000)


def test_browser_runs_table_preview_and_report(browser_page, runs):
    page = browser_page
    _tab(page, "Runs")
    table = page.locator("#runs-table")
    for name in ("dcgan", "cdcgan", "pix2pix", "cyclegan", "ssgan"):
        table.get_by_text(f"{name} ({name})", exact=True).first.wait_for(state="attached", timeout=30_000)
    page.locator("#runs-pick").get_by_label("run").click()
    page.get_by_role("option", name="ssgan (ssgan)").click()
    page.wait_for_selector("#runs-preview img", timeout=30_000)
    page.wait_for_selector("#runs-loss img")
    assert "accuracy" in page.locator("#runs-report").inner_text().lower()


def test_browser_bad_upload_is_a_message_and_the_app_keeps_serving(browser_page, app, tmp_path, fake_gs):
    page = browser_page
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"this is text, not a PNG")
    _tab(page, "Translate")
    _upload(page, "translate-upload", fake)
    page.click("#translate-go")
    page.wait_for_selector("text=holiday.png: not a PNG", timeout=30_000)
    eps = tmp_path / "poster.png"  # Gradio checks the extension only; gankit reads the content
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    for tab, upload, go in (
        ("Translate", "translate-upload", "#translate-go"),
        ("Classify", "classify-upload", "#classify-go"),
    ):
        _tab(page, tab)
        _upload(page, upload, eps)
        page.click(go)
        page.wait_for_selector("text=poster.png: its content is PostScript/EPS", timeout=30_000)
    assert not fake_gs.exists()
    _tab(page, "Translate")
    big = tmp_path / "huge.png"
    Image.new("RGB", (2000, 1500)).save(big)  # 3 MP, over this app's 2 MP limit
    _upload(page, "translate-upload", big)
    page.click("#translate-go")
    page.wait_for_selector("text=MP is over the limit of 2.0 MP", timeout=30_000)
    _, workdir = app
    assert any((workdir / "uploads").rglob("holiday.png"))  # uploads land in the app's own folder
    src = tmp_path / "fine.png"
    Image.new("RGB", (33, 21), (200, 10, 10)).save(src)
    _upload(page, "translate-upload", src)
    page.click("#translate-go")  # and it still serves
    page.wait_for_selector("#translate-output img", timeout=60_000)


def test_browser_long_sweep_shows_progress_is_cancelled_and_others_are_served(app, tmp_path):
    if not _has_builtin():
        pytest.skip("needs gankit[imagenet]")
    from playwright.sync_api import sync_playwright

    url, _ = app
    photo = tmp_path / "cat.png"
    Image.open(_photo("chelsea.png")).convert("RGB").resize((224, 224)).save(photo)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        one, two = browser.new_page(), browser.new_page()  # two users
        for page in (one, two):
            page.goto(url)
            page.wait_for_selector("text=gankit")
        _tab(one, "Attack")
        one.get_by_label("attack", exact=True).click()
        one.get_by_role("option", name="pgd", exact=True).click()
        eps = one.locator("#attack-eps input[type=number]")
        eps.fill("32")
        eps.press("Enter")
        _upload(one, "attack-upload", photo)
        one.click("#attack-sweep")  # 32 PGD attacks: rows arrive one epsilon at a time
        grid = one.locator("#attack-table [role=grid]")

        def rows() -> int:  # rows the sweep has filled in (the grid counts its header row too)
            return int(grid.get_attribute("aria-rowcount") or 1) - 1

        deadline = time.monotonic() + 120
        while not grid.get_by_text("1/255", exact=True).count() and time.monotonic() < deadline:
            one.wait_for_timeout(500)
        assert rows() >= 1  # progress: the first rows are in
        _tab(two, "Classify")  # meanwhile, another user is served
        _upload(two, "classify-upload", _photo("coffee.png"))
        two.click("#classify-go")
        two.wait_for_selector("#classify-result >> text=espresso", timeout=60_000)
        one.click("#attack-cancel")
        one.wait_for_timeout(4000)
        stopped = rows()
        one.wait_for_timeout(4000)
        assert 1 <= stopped == rows() < 32  # cancelled: no more rows after the one in progress
        browser.close()
