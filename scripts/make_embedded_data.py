"""Rebuild the small Fashion-MNIST subset embedded in the package (used by `gankit demo`).

Reads the full IDX files (e.g. Debian's `dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist)
and writes a class-balanced subset, drawn without replacement from a fixed seed, in the same IDX
format (gzip) under src/gankit/data/embedded/fashion-mnist-small/.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src/gankit/data/embedded/fashion-mnist-small"


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    # mtime=0 keeps the files byte-identical between rebuilds.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def subset(images: np.ndarray, labels: np.ndarray, per_class: int, rng: np.random.Generator):
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    idx = np.sort(np.concatenate(picks))
    return images[idx], labels[idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train-per-class", type=int, default=400)
    ap.add_argument("--test-per-class", type=int, default=50)
    args = ap.parse_args()
    src, rng = Path(args.src), np.random.default_rng(20170825)  # Fashion-MNIST's release date
    OUT.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", args.train_per_class), ("t10k", args.test_per_class)):
        images = read_idx(src / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(src / f"{split}-labels-idx1-ubyte.gz")
        images, labels = subset(images, labels, per_class, rng)
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", labels)
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.glob("*.gz")), "bytes")


if __name__ == "__main__":
    main()
