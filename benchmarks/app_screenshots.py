"""Screenshots of each tab of `gankit serve` for the docs (docs/assets/app_*.png), in headless Chromium.

    python benchmarks/app_screenshots.py RUN_OR_FOLDER [...] --photo coffee.png

Starts the app on 127.0.0.1 with the given runs, does one thing per tab (a class grid, a translation,
a top-5, an FGSM attack at 4/255, the runs table) and saves a palette PNG of each (kept under 200 KB).
Needs chromium (Debian's) and the playwright package; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

from PIL import Image

from gankit.app import serve, stop


def shrink(path: Path, limit: int = 200_000) -> None:
    """Quantise a screenshot to a palette PNG; fewer colours until it is under `limit` bytes."""
    image = Image.open(path).convert("RGB")
    for colours in (128, 64, 32):
        image.quantize(colours).save(path, optimize=True)
        if path.stat().st_size < limit:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--photo", required=True, help="a photo for Translate, Classify and Attack")
    ap.add_argument("--generate-run", default=None, help="the run to pick in Generate (label shown)")
    ap.add_argument("--runs-run", required=True, help="the run to open in Runs (label shown)")
    ap.add_argument("--count", type=int, default=80, help="images in the Generate grid")
    ap.add_argument("--out", default="docs/assets")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page_, url, workdir = serve(args.runs, port=port, block=False)
    out = Path(args.out)
    photo = Path(workdir) / "photo.png"
    Image.open(args.photo).convert("RGB").resize((224, 224)).save(photo)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url)
            page.wait_for_selector("text=gankit")

            def shot(name: str) -> None:
                path = out / f"app_{name}.png"
                page.screenshot(path=str(path), full_page=False)
                shrink(path)
                print(path, path.stat().st_size)

            if args.generate_run:
                page.get_by_label("run").first.click()
                page.get_by_role("option", name=args.generate_run).click()
            count = page.get_by_label("images").locator("xpath=..").locator("input[type=number]")
            if count.count():
                count.first.fill(str(args.count))
                count.first.press("Enter")
            page.click("#generate-go")
            page.wait_for_selector("#generate-grid img", timeout=120_000)
            page.evaluate("window.scrollTo(0, 0)")
            shot("generate")

            page.get_by_role("tab", name="Translate").click()
            page.locator("#translate-upload input[type=file]").set_input_files(str(photo))
            page.click("#translate-go")
            page.wait_for_selector("#translate-output img", timeout=120_000)
            shot("translate")

            page.get_by_role("tab", name="Classify").click()
            page.locator("#classify-upload input[type=file]").set_input_files(str(photo))
            page.click("#classify-go")
            page.wait_for_selector("#classify-result .label", timeout=120_000)
            page.wait_for_timeout(500)
            shot("classify")

            page.get_by_role("tab", name="Attack").click()
            page.locator("#attack-upload input[type=file]").set_input_files(str(photo))
            page.click("#attack-go")
            page.wait_for_selector("#attack-result >> text=after:", timeout=120_000)
            page.locator("#attack-result").scroll_into_view_if_needed()
            page.evaluate("window.scrollBy(0, 150)")
            shot("attack")

            page.get_by_role("tab", name="Runs").click()
            page.locator("#runs-pick").get_by_label("run").click()
            page.get_by_role("option", name=args.runs_run).click()
            page.wait_for_selector("#runs-preview img", timeout=60_000)
            shot("runs")
            browser.close()
    finally:
        stop(page_, workdir)


if __name__ == "__main__":
    main()
