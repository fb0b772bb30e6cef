"""Checkpoints as single safetensors files: no pickle anywhere, written atomically, rotated.

A checkpoint holds a nested state (module weights, optimiser and scheduler states, RNG states,
counters). Tensors go into the safetensors payload; everything else is a JSON skeleton stored in
the file's metadata, with tensors replaced by references. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..errors import GankitError
from ..io import atomic_path, remove_stale_tmp

_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")


def pack(state) -> tuple[dict[str, torch.Tensor], str]:
    """Split a nested dict/list state into (flat tensors, JSON skeleton)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, path: str):
        if isinstance(obj, torch.Tensor):
            key = path or "_"
            tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            # JSON object keys must be strings; optimiser states are keyed by int.
            return {"__dict__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {
                "__list__": [walk(v, f"{path}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple),
            }
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path!r}")

    return tensors, json.dumps(walk(state, ""))


def unpack(tensors: dict[str, torch.Tensor], skeleton: str):
    """Inverse of `pack`."""

    def build(node):
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__dict__" in node:
                return {k: build(v) for k, v in node["__dict__"]}
            if "__list__" in node:
                items = [build(v) for v in node["__list__"]]
                return tuple(items) if node.get("tuple") else items
        return node

    return build(json.loads(skeleton))


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write `state` to `path` atomically and durably: a temp file, checked to read back, fsynced, renamed,
    and the folder fsynced."""
    tensors, skeleton = pack(state)
    with atomic_path(path, durable=True) as tmp:
        save_file(tensors, str(tmp), metadata={"gankit_state": skeleton})
        _read_skeleton(tmp)  # a file that does not read back never replaces anything
    return path


def _read_skeleton(path: Path) -> str:
    try:
        with safe_open(str(path), framework="pt") as f:
            skeleton = (f.metadata() or {}).get("gankit_state")
    except (SafetensorError, OSError) as e:
        raise GankitError(f"{path}: not a readable gankit checkpoint ({e})") from None
    if skeleton is None:
        raise GankitError(f"{path}: safetensors file without gankit state (not a checkpoint)")
    return skeleton


def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`: tensors on `device`, except the RNG states,
    which stay on the CPU (torch.set_rng_state and cuda.set_rng_state_all take CPU byte tensors)."""
    skeleton = _read_skeleton(path)
    try:
        tensors = load_file(str(path), device="cpu")
        state = unpack(tensors, skeleton)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise GankitError(f"{path}: not a readable gankit checkpoint ({e})") from None
    device = torch.device(device)
    if device.type != "cpu":
        state = {k: v if k == "rng" else _to_device(v, device) for k, v in state.items()}
    return state


def load_latest(folder: Path, device: str | torch.device = "cpu") -> tuple[Path, dict]:
    """(path, state) of the newest checkpoint in `folder` that reads; an unreadable newer one (a disk
    that lost its last write) is skipped with a warning. GankitError when none reads."""
    found = list_checkpoints(folder)
    errors = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path, device)
        except GankitError as e:
            errors.append(str(e))
            continue
        for e in errors:
            print(f"gankit: warning: {e}; using the previous checkpoint {path.name}", file=sys.stderr)
        return path, state
    if errors:
        raise GankitError(f"{folder}: no readable checkpoint ({errors[0]})")
    raise GankitError(f"{folder.parent}: run has no checkpoint yet (nothing to load or resume)")


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def rotate(folder: Path, keep: int, protect: set[Path] = frozenset()) -> None:
    """Delete all but the newest `keep` checkpoints (never those in `protect`), and stray temps."""
    found = list_checkpoints(folder)
    for _, p in found[:-keep] if keep > 0 else found:
        if p not in protect:
            p.unlink(missing_ok=True)
    remove_stale_tmp(folder)
