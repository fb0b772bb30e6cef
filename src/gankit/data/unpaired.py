"""Unpaired image domains for CycleGAN: `trainA/ trainB/ testA/ testB/` (the CycleGAN archives) or
two plain folders `A/` and `B/` (then the same images serve for training and the evaluation panel).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import distributed
from ..errors import GankitError
from .batches import cycled_order
from .download import Remote
from .images import decode_all, list_images, uniform_channels

CYCLEGAN_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{}.zip"

# Published file counts of the CycleGAN archives, checked after extraction.
CYCLEGAN_SETS: dict[str, dict[str, int]] = {
    "summer2winter_yosemite": {"trainA": 1231, "trainB": 962, "testA": 309, "testB": 238},
    "horse2zebra": {"trainA": 1067, "trainB": 1334, "testA": 120, "testB": 140},
    "apple2orange": {"trainA": 995, "trainB": 1019, "testA": 266, "testB": 248},
    "monet2photo": {"trainA": 1072, "trainB": 6287, "testA": 121, "testB": 751},
}

# (size in bytes, sha256) of each archive, as TensorFlow Datasets records them for the same files.
CYCLEGAN_DIGESTS: dict[str, tuple[int, str]] = {
    "summer2winter_yosemite": (
        132_640_856,
        "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9",
    ),
    "horse2zebra": (116_867_962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
    "apple2orange": (78_456_409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
    "monet2photo": (305_231_073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
}


def cyclegan_archive(name: str) -> Remote:
    """The download of a named CycleGAN dataset, with its pinned size and sha256."""
    size, sha256 = CYCLEGAN_DIGESTS[name]
    return Remote(CYCLEGAN_URL.format(name), f"sha256:{sha256}", size=size)


@dataclass
class UnpairedData:
    """The training images of both domains (uint8 NCHW) and the folder they came from."""

    root: Path
    a: torch.Tensor
    b: torch.Tensor

    def __len__(self) -> int:
        """The smaller domain's image count (what limits how much the data can teach)."""
        return min(len(self.a), len(self.b))


IMBALANCE_WARNING = 10  # warn when one domain has this many times fewer images than the other


def domain_folders(root: str | Path, split: str = "train") -> tuple[Path, Path]:
    """(folder of A, folder of B) for `split` (train or test) in either accepted layout."""
    root = Path(root)
    if not root.is_dir():
        raise GankitError(f"--data {root}: no such folder")
    for a, b in ((f"{split}A", f"{split}B"), ("A", "B")):
        if (root / a).is_dir() and (root / b).is_dir():
            return root / a, root / b
    if split != "train" and (root / "trainA").is_dir():
        return domain_folders(root, "train")
    raise GankitError(f"{root}: expected trainA/ and trainB/ (or A/ and B/) folders of images")


def load_domains(
    root: str | Path,
    split: str,
    size: int,
    skip_bad: bool = False,
    channels: tuple[int, int] | None = None,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both domains of `split` as uint8 (N, C, size, size) tensors (square centre crops, resized);
    `limit`: only the first images of each (e.g. a few for previews: nothing else is decoded)."""
    fa, fb = domain_folders(root, split)
    out = []
    for k, folder in enumerate((fa, fb)):
        paths = list_images(folder)[:limit]
        if not paths:
            raise GankitError(f"{folder}: domain {'AB'[k]} holds no images")
        c = channels[k] if channels else uniform_channels(paths, "a domain", skip_bad)
        out.append(decode_all(paths, c, size, skip_bad)[0])
    a, b = out
    small, large = sorted((len(a), len(b)))
    if large >= IMBALANCE_WARNING * small:
        print(
            f"gankit: warning: domain sizes are very unequal ({len(a)} A vs {len(b)} B images in {root}); "
            "the smaller domain will be seen many times per epoch",
            file=sys.stderr,
        )
    return a, b


class UnpairedBatches:
    """Per step a batch from A and an independent batch from B. An epoch is max(|A|, |B|) / batch
    steps (the reference code's length); the smaller domain is cycled through fresh permutations.
    The order depends only on (seed, epoch), so a resumed run continues it exactly."""

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        shard: tuple[int, int] | None = None,
    ):
        self.a, self.b = a.to(device), b.to(device)
        self.shard = shard or distributed.shard()
        self.batch_size = max(1, min(batch_size, len(a) // self.shard[1], len(b) // self.shard[1]))
        self.seed, self.device = seed, device

    def __len__(self) -> int:
        return max(1, max(len(self.a), len(self.b)) // (self.batch_size * self.shard[1]))

    def _order(self, n: int, epoch: int, salt: int) -> torch.Tensor:
        need = len(self) * self.batch_size * self.shard[1]
        return cycled_order(n, need, self.seed * 1_000_003 + epoch * 2 + salt)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 A batch, uint8 B batch) for steps start.. of `epoch`."""
        oa = self._order(len(self.a), epoch, 0).to(self.device)
        ob = self._order(len(self.b), epoch, 1).to(self.device)
        for k in range(start, len(self)):
            rows = distributed.shard_rows(k, self.batch_size, self.shard)
            yield self.a[oa[rows]], self.b[ob[rows]]
