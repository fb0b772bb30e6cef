"""Atomic file writing: readers never see a half-written file, a crash leaves only a stray *.tmp."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data and metadata to the disk (folders: where the OS allows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, else removed.

    durable: fsync the file before the rename and its folder before and after it, so that after a
    power loss the folder holds either the old file or the complete new one (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        if durable:
            fsync_path(tmp)
            fsync_path(path.parent)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], durable: bool = False) -> Path:
    """Call `write(tmp_path)` and rename the result to `path` (`durable`: see atomic_path)."""
    with atomic_path(path, durable) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    return write_atomic(path, lambda p: p.write_text(text), durable)


def write_json_atomic(path: str | os.PathLike, obj, durable: bool = False) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", durable)


def remove_stale_tmp(folder: str | os.PathLike) -> None:
    """Delete temporaries left by a process that was killed while writing."""
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)


def distinct_stems(paths: list[Path], roots: list[Path] | None = None) -> list[Path]:
    """One distinct output path without suffix per input file, so that outputs never overwrite each
    other. A file under one of the folders in `roots` keeps its place in that folder's tree, any other
    its bare name. Inputs that would share a stem (`a.jpg` and `a.png`) keep their extension in it
    (`a_jpg`, `a_png`); any still equal (the same name from two folders) get `-2`, `-3`, ... in order."""
    dirs = [Path(r) for r in roots or [] if Path(r).is_dir()]

    def base(p: Path) -> Path:
        return next((p.relative_to(r) for r in dirs if r in p.parents), Path(p.name))

    bases = [base(Path(p)) for p in paths]
    stems = [b.with_suffix("") for b in bases]
    counts: dict[str, int] = {}
    for s in stems:
        counts[str(s).lower()] = counts.get(str(s).lower(), 0) + 1
    stems = [
        s if counts[str(s).lower()] == 1 else s.with_name(f"{s.name}_{b.suffix.lstrip('.').lower()}")
        for s, b in zip(stems, bases)
    ]
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        key = str(s).lower()
        seen[key] = seen.get(key, 0) + 1
        out.append(s if seen[key] == 1 else s.with_name(f"{s.name}-{seen[key]}"))
    return out
