"""The real-vs-real FID floor of a dataset at the standard protocol: N training images scored as if
generated, against the test split (what a perfect generator would get at these counts).

    python benchmarks/fid_floor.py --data fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse

import torch
from common import ResultLog  # noqa: E402  (this folder)

from gankit.data import load_dataset
from gankit.metrics.quality import STANDARD_COUNT, RealSet, evaluate_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--count", type=int, default=STANDARD_COUNT, help="training images drawn (seed 0)")
    ap.add_argument("--extractor", default=None)
    ap.add_argument("--feature-precision", default="fp32", choices=("fp32", "bf16"))
    ns = ap.parse_args()
    train = load_dataset(ns.data, "train", ns.data_dir)
    test = load_dataset(ns.data, "test", ns.data_dir)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: ns.count]
    r = evaluate_samples(
        train.images[pick],
        RealSet(test.images, f"{ns.data}:test", "test"),
        ns.extractor,
        ns.feature_precision,
    )
    r["protocol"]["generated"] = {"count": len(pick), "source": f"{ns.data}:train (random, seed 0)"}
    log = ResultLog("fid-floor")
    log.add(r)
    log.write()


if __name__ == "__main__":
    main()
