"""Folders of ordinary image files, decoded with Pillow into uint8 tensors.

Grayscale, RGBA, palette and 16-bit images are converted explicitly (alpha is composited on
white; 16-bit values are scaled by their mode's range, not truncated). Unreadable files, and images
of more than `$GANKIT_MAX_IMAGE_PIXELS` pixels (default: Pillow's limit, about 89 megapixels; a
decompression bomb is just a bad image), are reported by path; the user chooses to stop (default) or
skip them.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import GankitError
from .base import ImageSet

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
UNLABELED = "unlabeled"
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit

# What a file that is not a decodable image raises while it is opened or decoded.
BAD_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def max_image_pixels() -> int:
    """The largest image (width x height) gankit decodes: $GANKIT_MAX_IMAGE_PIXELS, else Pillow's default."""
    text = os.environ.get("GANKIT_MAX_IMAGE_PIXELS", "")
    try:
        return int(text) if text else DEFAULT_MAX_PIXELS
    except ValueError:
        raise GankitError(f"GANKIT_MAX_IMAGE_PIXELS={text!r}: expected a whole number of pixels") from None


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; raises DecompressionBombError for one over the pixel
    limit (checked from the header, before any pixel is decoded)."""
    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own check (at twice its limit) must not be stricter
    with Image.open(path) as img:
        w, h = img.size
        if w * h > limit:
            raise Image.DecompressionBombError(
                f"{w}x{h} = {w * h} pixels exceeds the limit of {limit} (set GANKIT_MAX_IMAGE_PIXELS)"
            )
        img.load()
        return img.copy()


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GankitError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def expand_paths(inputs) -> list[Path]:
    """Image files from a mix of files and folders (folders searched recursively), in order given."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise GankitError(f"{item}: no such file or folder")
    if not paths:
        raise GankitError(f"no images found in {', '.join(map(str, inputs))}")
    return paths


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float images to 8-bit 'L' by the range of their *mode*, never by their
    content (a dark 16-bit image stays dark): I;16* and I (what Pillow gives 16-bit PNG/TIFF files)
    0..65535, F (floating point) 0..1."""
    a = np.asarray(img, dtype=np.float64)
    a = a * 255.0 if img.mode == "F" else a / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow image to 8-bit 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def is_gray(path: Path) -> bool:
    with Image.open(path) as img:
        return img.mode in _GRAY_MODES


def _mode(path: Path) -> str:
    try:
        with Image.open(path) as img:
            return img.mode
    except BAD_IMAGE_ERRORS:
        return "RGB"  # decided (and reported) when decoded


def uniform_channels(paths: list[Path], what: str, skip_bad: bool = False) -> int:
    """1 when every file is grayscale, 3 when every one is colour. Mixing both is an error naming a
    file of each (with `skip_bad`, a warning, and all are read as colour). `what` names the set."""
    gray = [_mode(p) in _GRAY_MODES for p in paths]
    if all(gray):
        return 1
    if any(gray):
        g, c = paths[gray.index(True)], paths[gray.index(False)]
        msg = f"{g}: grayscale, but {c} is colour; {what} must be all one or the other"
        if not skip_bad:
            raise GankitError(msg + " (convert the files, or pass --skip-bad-images to read all as colour)")
        print(f"gankit: {msg}; reading all as colour", file=sys.stderr)
    return 3


def decode(path: Path, channels: int, size: int | None = None) -> torch.Tensor:
    """Decode one image file to a uint8 CHW tensor, center-cropped and resized to `size` if given."""
    img = to_mode(ImageOps.exif_transpose(open_image(path)), channels)
    if size is not None:
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a.reshape(a.shape[0], a.shape[1], channels).transpose(2, 0, 1).copy())


def _decode_or_report(path: Path, channels: int, size: int | None, skip_bad: bool):
    try:
        return decode(path, channels, size)
    except BAD_IMAGE_ERRORS as e:
        if skip_bad:
            print(f"gankit: skipping unreadable image {path} ({e})", file=sys.stderr)
            return None
        raise GankitError(
            f"{path}: cannot decode image ({type(e).__name__}: {e}); "
            "pass --skip-bad-images to skip such files"
        ) from None


def infer_channels(paths: list[Path]) -> int:
    """1 when every readable file is grayscale, else 3."""
    for p in paths:
        try:
            if not is_gray(p):
                return 3
        except BAD_IMAGE_ERRORS:
            continue
    return 1


def decode_all(
    paths: list[Path],
    channels: int,
    size: int,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, list[Path]]:
    """Decode `paths` in parallel into one uint8 (N, C, size, size) tensor; returns the kept paths.
    Beyond the memory budget the tensor is a memory map of the decoded-image cache (data/decoded.py)."""
    from .decoded import decoded_images, memory_budget

    def one(p: Path) -> torch.Tensor | None:
        return _decode_or_report(p, channels, size, skip_bad)

    if len(paths) * channels * size * size > memory_budget():
        images, rows = decoded_images(paths, channels, size, one)
    else:
        with ThreadPoolExecutor() as pool:
            decoded = list(pool.map(one, paths))
        rows = [i for i, t in enumerate(decoded) if t is not None]
        images = torch.stack([decoded[i] for i in rows]) if rows else None
    if not rows:
        raise GankitError(f"none of the {len(paths)} image files could be decoded")
    return images, [paths[i] for i in rows]


def load_image_folder(
    folder: str | Path, size: int, channels: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Every image under `folder` (recursively), square-cropped and resized to `size`."""
    paths = list_images(folder)
    if not paths:
        raise GankitError(f"{folder}: no images found (looked for {', '.join(sorted(EXTENSIONS))})")
    channels = channels or infer_channels(paths)
    images, _ = decode_all(paths, channels, size, skip_bad)
    return ImageSet(images, source=str(folder))


def load_labelled_folder(
    folder: str | Path, size: int, channels: int | None = None, skip_bad: bool = False
) -> tuple[ImageSet, ImageSet | None]:
    """One sub-folder per class (sorted names = class ids); `unlabeled/` holds optional extra images.

    Returns the labelled set and the unlabelled one (None when there is no `unlabeled/`).
    """
    folder = Path(folder)
    classes = sorted(d.name for d in list_dirs(folder) if d.name != UNLABELED)
    if len(classes) < 2:
        raise GankitError(
            f"{folder}: a labelled folder needs at least two class sub-folders, found {len(classes)}"
        )
    per_class = {c: list_images(folder / c) for c in classes}
    empty = [c for c, ps in per_class.items() if not ps]
    if empty:
        raise GankitError(f"{folder / empty[0]}: class folder holds no images")
    extra = list_images(folder / UNLABELED) if (folder / UNLABELED).is_dir() else []
    all_paths = [p for ps in per_class.values() for p in ps]
    channels = channels or infer_channels(all_paths + extra)
    images, kept = decode_all(all_paths, channels, size, skip_bad)
    label_of = {p: i for i, c in enumerate(classes) for p in per_class[c]}
    labels = torch.tensor([label_of[p] for p in kept], dtype=torch.int64)
    labelled = ImageSet(images, labels, classes, str(folder))
    unlabelled = None
    if extra:
        unlabelled = ImageSet(decode_all(extra, channels, size, skip_bad)[0], source=str(folder / UNLABELED))
    return labelled, unlabelled


def list_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise GankitError(f"{folder}: no such folder")
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
