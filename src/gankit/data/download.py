"""Cached, checksummed, resumable downloads.

Files land in `$GANKIT_DATA` (default ~/.cache/gankit). A transfer is written to `NAME.part`; an
interrupted one resumes with an HTTP Range request, a finished one is checked against its hash and
only then renamed to its final name, so the cache never holds a corrupt file under a good name.
pooch would cover caching and hashes but cannot resume partial transfers, hence this module.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import GankitError
from ..io import atomic_path, fsync_path

CHUNK = 1 << 20
RETRIES = 4


@dataclass(frozen=True)
class Remote:
    """A file to fetch: where from, its pinned digest (`md5:...` or `sha256:...`), its size in bytes
    where published, and its name. There is no trust on first use: every file gankit downloads is
    checked against a digest written here before it gets its final name."""

    url: str
    digest: str
    name: str | None = None
    size: int | None = None

    def __post_init__(self):
        algorithm, _, value = str(self.digest).partition(":")
        if algorithm not in ("md5", "sha256") or not value:
            raise ValueError(f"{self.url}: digest {self.digest!r} is not md5:HEX or sha256:HEX")

    @property
    def filename(self) -> str:
        return self.name or self.url.rsplit("/", 1)[-1]


def cache_dir() -> Path:
    """The download cache root: $GANKIT_DATA, else ~/.cache/gankit."""
    return Path(os.environ.get("GANKIT_DATA") or Path.home() / ".cache" / "gankit")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(path: Path, digest: str) -> tuple[bool, str]:
    algorithm, _, expected = digest.partition(":")
    actual = file_digest(path, algorithm)
    return actual == expected.lower(), actual


def _fetch_once(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of `url` to `part`, asking only for the bytes not yet there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gankit"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # server ignored the range: start over
            have = 0
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(remote: Remote, folder: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Return the local path of `remote` inside `folder`, downloading it if needed.

    Resumes partial downloads and retries transient network errors. A transfer that ended short of the
    published size is kept to resume; one with the wrong size or digest is deleted (so running again
    downloads afresh) and raises GankitError, as does a source that cannot be reached.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    if dest.exists():
        ok, _ = _check_digest(dest, remote.digest)
        if ok:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    for attempt in range(RETRIES):
        try:
            _fetch_once(remote.url, part, progress, timeout)
            break
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                raise GankitError(f"download of {remote.url} failed: HTTP {e.code} {e.reason}") from None
            if attempt == RETRIES - 1:
                raise GankitError(
                    f"download of {remote.url} failed after {RETRIES} tries ({e}); "
                    f"partial file kept at {part}, run again to resume"
                ) from None
            time.sleep(min(2**attempt, 10) * 0.1)
    got = part.stat().st_size
    if remote.size is not None and got < remote.size:
        raise GankitError(
            f"download of {remote.url} ended early ({got} of {remote.size} bytes); "
            f"partial file kept at {part}, run again to resume"
        )
    ok, actual = _check_digest(part, remote.digest)
    if not ok or (remote.size is not None and got != remote.size):
        part.unlink()
        raise GankitError(
            f"checksum mismatch for {remote.url}: expected {remote.digest} ({remote.size or '?'} bytes), "
            f"got {remote.digest.partition(':')[0]}:{actual} ({got} bytes); the file was removed, run "
            "again to download it afresh (if the publisher changed the file, download it yourself and "
            "pass --data-dir)"
        )
    fsync_path(part)
    os.replace(part, dest)
    fsync_path(folder)
    return dest


def extract_members(archive: Path, members: dict[str, Path]) -> None:
    """Extract `members` (name in zip -> destination) from a zip archive, each atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for name, dest in members.items():
                if dest.exists():
                    continue
                if name not in names:
                    raise GankitError(f"{archive}: archive has no member {name!r}")
                with atomic_path(dest) as tmp, zf.open(name) as src, open(tmp, "wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
    except zipfile.BadZipFile:
        raise GankitError(f"{archive}: not a valid zip archive (delete it to re-download)") from None


def _safe_zip_members(zf: zipfile.ZipFile) -> None:
    bad = zf.testzip()  # reads every member: CRC errors surface here
    if bad is not None:
        raise zipfile.BadZipFile(f"CRC error in {bad}")
    for name in zf.namelist():
        if name.startswith("/") or ".." in Path(name).parts:
            raise zipfile.BadZipFile(f"unsafe member name {name!r}")


def _extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract with the standard 'data' filter where this Python has it (3.10.12+, 3.11.4+, 3.12+);
    on older ones refuse what that filter refuses: absolute or `..` names, links, devices."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    members = tar.getmembers()
    for m in members:
        if m.name.startswith("/") or ".." in Path(m.name).parts:
            raise tarfile.TarError(f"unsafe member name {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"member {m.name!r} is a link or special file")
    tar.extractall(dest, members=members)  # noqa: S202 - every member checked above


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a .zip or .tar(.gz) archive into `dest` atomically: into a temporary folder, then renamed
    (a single top-level folder in the archive becomes `dest` itself).

    Every member is read, so a CRC error is reported rather than half an archive used; unsafe member
    names (absolute, `..`) are refused.
    """
    tmp = dest.with_name(f".{dest.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_zip_members(zf)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tar:
                _extract_tar(tar, tmp)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GankitError(f"{archive}: damaged archive ({e})") from None
    entries = list(tmp.iterdir())
    src = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    os.replace(src, dest)
    shutil.rmtree(tmp, ignore_errors=True)
