"""The seed's FGSM experiment and a PGD robustness curve for EfficientNet-Lite0 on real CC0 photos.

Photos: scikit-image's sample images (pip install scikit-image). 1) `gankit attack fgsm` on coffee.png at
the seed's epsilons (0, 0.005, 0.01, 0.1 in its [-1, 1] scale = 0, 0.0025, 0.005, 0.05 here); 2) robust
accuracy vs eps for FGSM and PGD-10 over all photos, the labels being the model's clean predictions.

    python benchmarks/attack_photos.py --out docs/attacks
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import skimage.data
from common import ResultLog  # noqa: E402  (this folder)

from gankit.attacks import attack_paths, load_classifier, robustness
from gankit.attacks.files import load_image_tensor

PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "horse.png"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="attack-photos")
    ap.add_argument("--eps", default="0,0.5/255,1/255,2/255,4/255")
    args = ap.parse_args()
    out = Path(args.out)
    src = Path(skimage.data.__file__).parent
    sweep = attack_paths(
        "fgsm", "efficientnet-lite0", [str(src / "coffee.png")], "0,0.0025,0.005,0.05", out / "fgsm"
    )
    log = ResultLog("attack-photos")
    for r in sweep["images"][0]["results"]:
        log.add({"fgsm_eps": r["eps"], "label": r["label"], "confidence": round(r["confidence"], 4)})
    model = load_classifier("efficientnet-lite0")
    with tempfile.TemporaryDirectory() as tmp:  # a labelled folder: class id = clean prediction
        for name in PHOTOS:
            x = load_image_tensor(src / name, model).unsqueeze(0)
            cls = int(model(x).argmax(1))
            (Path(tmp) / str(cls)).mkdir(exist_ok=True)
            shutil.copy(src / name, Path(tmp) / str(cls) / name)
        rep = robustness("efficientnet-lite0", tmp, ["fgsm", "pgd"], args.eps, out / "robustness", steps=10)
    for row in rep["rows"]:
        log.add({k: row[k] for k in ("eps", "attack", "robust_accuracy", "mean_linf")})
    log.write()


if __name__ == "__main__":
    main()
