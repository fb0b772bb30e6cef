"""The docs' demo pictures from a `gankit demo` run: three previews side by side, and its loss plot.

gankit demo --out runs/demo && python scripts/demo_figure.py runs/demo --epochs 0 4 7
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parents[1] / "docs" / "assets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--epochs", type=int, nargs="+", default=[0, 4, 7])
    ap.add_argument("--gap", type=int, default=10)
    args = ap.parse_args()
    tiles = [Image.open(args.run / "previews" / f"epoch-{e:04d}.png").convert("L") for e in args.epochs]
    width = sum(t.width for t in tiles) + args.gap * (len(tiles) - 1)
    strip = Image.new("L", (width, max(t.height for t in tiles)), 255)
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + args.gap
    strip.save(DOCS / "dcgan-demo.png", optimize=True)
    shutil.copyfile(args.run / "loss.png", DOCS / "dcgan-demo-loss.png")
    print(f"wrote {DOCS / 'dcgan-demo.png'} and {DOCS / 'dcgan-demo-loss.png'}")


if __name__ == "__main__":
    main()
