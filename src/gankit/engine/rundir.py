"""The run directory: config.json, metrics.jsonl, previews/, checkpoints/, loss.png."""

from __future__ import annotations

import json
from pathlib import Path

from .._version import __version__
from ..config import TrainConfig
from ..errors import GankitError
from ..io import write_json_atomic, write_text_atomic
from .checkpoint import list_checkpoints


class RunDir:
    """Paths and small I/O helpers of one training run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.previews = self.path / "previews"
        self.checkpoints = self.path / "checkpoints"
        self.best_checkpoint = self.checkpoints / "best.safetensors"  # kept by --eval-every
        self.loss_plot = self.path / "loss.png"
        self.sessions = self.path / "sessions.jsonl"

    def is_run(self) -> bool:
        return self.config.is_file()

    def require_run(self) -> RunDir:
        if not self.path.is_dir():
            raise GankitError(f"{self.path}: no such run directory")
        if not self.is_run():
            raise GankitError(f"{self.path}: not a gankit run directory (no config.json)")
        return self

    def checkpoint_steps(self) -> list[int]:
        return [s for s, _ in list_checkpoints(self.checkpoints)]

    def require_checkpoint(self) -> RunDir:
        """Refuse to resume a run that stopped before its first checkpoint, saying how to start over."""
        if not list_checkpoints(self.checkpoints):
            raise GankitError(self._no_checkpoint_message())
        return self

    def _no_checkpoint_message(self) -> str:
        return (
            f"{self.path}: the run stopped before its first checkpoint, so there is nothing to resume; "
            f"remove the folder (rm -r {self.path}) and train again, or choose another --out"
        )

    def ensure_new(self) -> None:
        """Refuse to start a run where one exists already."""
        if self.is_run() and not list_checkpoints(self.checkpoints):
            raise GankitError(self._no_checkpoint_message())
        if self.is_run() or list_checkpoints(self.checkpoints):
            raise GankitError(
                f"{self.path} already holds a gankit run: continue it with "
                f"`gankit train --resume {self.path}` or choose another --out"
            )
        if self.path.exists() and not self.path.is_dir():
            raise GankitError(f"--out {self.path}: exists and is not a folder")
        self._probe_create()

    def _probe_create(self) -> None:
        """Fail now, in one line, when the run folder cannot be made (before any time is spent on data);
        folders made by the probe are removed again."""
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GankitError(
                f"--out {self.path}: cannot create the run folder ({e.strerror or e}: {e.filename})"
            ) from None
        for p in missing:  # deepest first
            p.rmdir()

    def create(self, cfg: TrainConfig) -> None:
        """Start a new run here; refuse to overwrite an existing one."""
        self.ensure_new()
        self.path.mkdir(parents=True, exist_ok=True)
        self.save_config(cfg)

    def save_config(self, cfg: TrainConfig) -> None:
        write_json_atomic(self.config, {**cfg.to_dict(), "gankit_version": __version__})

    def record_session(self, from_step: int, to_step: int, seconds: float) -> None:
        """Note one training session (a `train` or a `--resume`): steps and wall time."""
        with open(self.sessions, "a") as f:
            f.write(
                json.dumps({"from_step": from_step, "to_step": to_step, "seconds": round(seconds, 2)}) + "\n"
            )

    def train_seconds(self) -> float:
        """Wall time of the recorded training sessions (a killed session is not recorded)."""
        if not self.sessions.is_file():
            return 0.0
        total = 0.0
        for line in self.sessions.read_text().splitlines():
            try:
                total += json.loads(line)["seconds"]
            except (json.JSONDecodeError, KeyError):
                continue
        return round(total, 1)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after `step` (they belong to a stretch a resumed run redoes)."""
        if not self.metrics.exists():
            return
        lines = [ln for ln in self.metrics.read_text().splitlines() if ln.strip()]
        kept = []
        for ln in lines:
            try:
                if json.loads(ln)["step"] <= step:
                    kept.append(ln)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a kill
        write_text_atomic(self.metrics, "".join(k + "\n" for k in kept))
