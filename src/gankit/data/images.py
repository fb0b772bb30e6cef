"""Folders of ordinary image files, decoded with Pillow into uint8 tensors.

Every image gankit reads (folders, uploads, attack and translate inputs) is opened by `open_image`,
which hands the file only to the decoders in `DECODERS`: PNG, JPEG, WebP, BMP, TIFF and GIF. The
content decides, never the extension, so a PostScript file named `x.png` is refused in one line and
Pillow's EPS plugin (which runs Ghostscript) is never reached.

Grayscale, RGBA, palette, CMYK, CIELAB and 16-bit images are converted explicitly (alpha is composited
on white; 16-bit values are scaled by their mode's range, not truncated; floating-point pixels must lie
in 0..1 or 0..255). Unreadable files, and images of more than `$GANKIT_MAX_IMAGE_PIXELS` pixels
(default: Pillow's limit, about 89 megapixels; a decompression bomb is just a bad image), are reported
by path; the user chooses to stop (default) or skip them. Hidden files (`.name`, such as the `._x.jpg`
files macOS leaves on shared drives) and hidden folders are not part of a folder's images.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import GankitError
from .base import ImageSet

# Pillow's format ids of the only decoders gankit lets open a file, and how messages name them.
DECODERS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
FORMATS_TEXT = "PNG, JPEG, WebP, BMP, TIFF or GIF"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
UNLABELED = "unlabeled"
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit

# Leading bytes of formats people mistake for images, to name what a refused file holds.
_OTHER_FORMATS = (
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "Photoshop PSD"),
    (0, b"<?xml", "XML (SVG?)"),
    (0, b"<svg", "SVG"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\xffO\xffQ", "JPEG 2000"),
    (4, b"jP  ", "JPEG 2000"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypavif", "AVIF"),
    (0, b"PK\x03\x04", "a zip archive"),
)


class BadImage(ValueError):
    """A file that is not an image gankit decodes; the message does not repeat the path."""


# What a file that is not a decodable image raises while it is opened or decoded.
BAD_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def max_image_pixels() -> int:
    """The largest image (width x height) gankit decodes: $GANKIT_MAX_IMAGE_PIXELS, else Pillow's default."""
    text = os.environ.get("GANKIT_MAX_IMAGE_PIXELS", "")
    try:
        return int(text) if text else DEFAULT_MAX_PIXELS
    except ValueError:
        raise GankitError(f"GANKIT_MAX_IMAGE_PIXELS={text!r}: expected a whole number of pixels") from None


def _what_it_is(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return ""
    for offset, magic, name in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return name
    return ""


@contextmanager
def opened(path: str | Path, max_pixels: int | None = None, hint: str = "set GANKIT_MAX_IMAGE_PIXELS"):
    """The image at `path` opened by one of `DECODERS` (header read, no pixel decoded yet), checked
    against the pixel limit (default `max_image_pixels()`). A file whose content is another format
    raises BadImage naming what it holds; one over the limit, DecompressionBombError (its message ends
    with `hint`, how to raise the limit)."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own check (at twice its limit) must not be stricter
    try:
        img = Image.open(path, formats=DECODERS)
    except UnidentifiedImageError:
        kind = _what_it_is(Path(path))
        raise BadImage(
            f"its content is {kind}, not an image gankit reads ({FORMATS_TEXT})"
            if kind
            else f"not a {FORMATS_TEXT} image"
        ) from None
    with img:
        w, h = img.size
        if w * h > limit:
            raise Image.DecompressionBombError(
                f"{w}x{h} = {w * h / 1e6:.1f} MP is over the limit of {limit / 1e6:.1f} MP ({hint})"
            )
        yield img


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file through `opened` (same decoders, same limit)."""
    with opened(path) as img:
        img.load()
        return img.copy()


def image_mode(path: str | Path) -> str:
    """The Pillow mode of an image file, from its header."""
    with opened(path) as img:
        return img.mode


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GankitError(f"{folder}: no such folder")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in EXTENSIONS and not _hidden(p, folder) and p.is_file()
    )


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
    0..65535; F (floating point) 0..1, or 0..255 when its values pass 1. Values outside those ranges
    are refused (BadImage) rather than saturated."""
    a = np.asarray(img, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise BadImage("floating-point pixels that are not finite (NaN or infinity)")
    if img.mode == "F":
        if lo < 0 or hi > 255:
            raise BadImage(f"floating-point pixels in [{lo:.4g}, {hi:.4g}]: expected 0..1 or 0..255")
        a = a * 255.0 if hi <= 1 else a
    else:
        if lo < 0 or hi > 65535:
            raise BadImage(f"32-bit pixels in [{lo:.0f}, {hi:.0f}]: expected 0..65535")
        a = a / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


@functools.cache
def _lab_to_srgb():
    from PIL import ImageCms

    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(lab, srgb, "LAB", "RGB")


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """CIELAB (a TIFF's 'LAB' mode) to sRGB through Little CMS, for both channel counts: Pillow has no
    LAB -> L conversion, so a CIELAB file in a grayscale set goes through sRGB and then to luma."""
    from PIL import ImageCms

    return ImageCms.applyTransform(img, _lab_to_srgb())


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow image to 8-bit 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode == "LAB":
        img = _lab_to_rgb(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def is_gray(path: Path) -> bool:
    return image_mode(path) in _GRAY_MODES


def _mode(path: Path) -> str:
    try:
        return image_mode(path)
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
        why = describe_bad_image(e)
        if skip_bad:
            print(f"gankit: skipping unreadable image {path} ({why})", file=sys.stderr)
            return None
        raise GankitError(f"{path}: {why}; pass --skip-bad-images to skip such files") from None


def describe_bad_image(e: BaseException) -> str:
    """What was wrong with a file that raised one of BAD_IMAGE_ERRORS, in a few words."""
    if isinstance(e, BadImage):
        return str(e)
    return f"cannot decode image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


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
