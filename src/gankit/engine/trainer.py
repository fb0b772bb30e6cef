"""The one training loop. It knows nothing about GANs.

A recipe gives it `batches` (an epoch-indexed batch source), `train_step(batch) -> dict of
scalar tensors`, its modules and optimisers (for checkpoints) and `preview()` (sample images).
The trainer owns everything else: progress, logging, previews, checkpoints, resume, signals.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .. import viz
from ..errors import GankitError, TrainingInterrupted
from ..io import write_json_atomic
from . import distributed
from .checkpoint import checkpoint_path, load_checkpoint, rotate, save_checkpoint
from .rundir import RunDir


@dataclass
class Progress:
    """Where training stands: steps done, current epoch, next batch index within it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


class NonFiniteLoss(GankitError):
    pass


def _tensorboard(folder):
    """A TensorBoard writer when tensorboard is installed (`pip install gankit[tensorboard]`), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch, "mps", None) and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout again.

    A checkpoint stores tensors contiguous; the parameters of channels-last networks are not. The
    fused Adam kernel walks a parameter and its moments as flat memory, so moments in another layout
    get paired with the wrong weights: a resumed run drifted from the uninterrupted one.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for key, t in st.items():
                if torch.is_tensor(t) and t.shape == p.shape and t.stride() != p.stride():
                    st[key] = torch.empty_like(p, dtype=t.dtype).copy_(t)


class Trainer:
    """Runs a recipe for cfg.epochs / cfg.max_steps, writing everything into `run`."""

    def __init__(self, recipe, run: RunDir, progress_bar: bool = True):
        self.recipe, self.cfg, self.run = recipe, recipe.cfg, run
        self.progress = Progress()
        self.main = distributed.is_main()
        self.progress_bar = progress_bar and self.main
        self._stop_signal: int | None = None
        self.tb = _tensorboard(run.path / "tensorboard") if self.main else None

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        r = self.recipe
        return {
            "modules": {k: m.state_dict() for k, m in r.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in r.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in r.schedulers.items()},
            "extra": r.extra_state(),
            "rng": rng_state(),
            "progress": vars(self.progress).copy(),
            "config": self.cfg.to_dict(),
        }

    def load_state(self, state: dict) -> None:
        r = self.recipe
        for k, m in r.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in r.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            match_param_layout(o)
        for k, s in r.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        r.load_extra_state(state.get("extra", {}))
        set_rng_state(state["rng"])
        self.progress = Progress(**state["progress"])

    def resume(self) -> None:
        """Continue from the run's latest checkpoint."""
        ckpt = self.run.latest_checkpoint()
        self.load_state(load_checkpoint(ckpt, self.recipe.device))
        self.run.truncate_metrics(self.progress.step)

    def save(self) -> None:
        self._raise_if_nonfinite()
        if not self.main:
            return
        step = self.progress.step
        path = save_checkpoint(checkpoint_path(self.run.checkpoints, step), self.state())
        rotate(self.run.checkpoints, self.cfg.keep_checkpoints, protect={path})

    # -- loop ----------------------------------------------------------------------------------
    def _raise_if_nonfinite(self) -> None:
        bad = int(self._first_bad)
        if bad >= 0:
            raise NonFiniteLoss(
                f"loss became NaN or infinite at step {bad}; stopped, the last good "
                f"checkpoint is kept in {self.run.checkpoints} (try a lower --lr)"
            )

    def _log(self, sums: dict, count: int, t0: float, images: int, bar) -> None:
        keys = list(sums)
        values = torch.stack([sums[k] for k in keys]).div(count).tolist()  # one sync per log
        self._raise_if_nonfinite()
        dt = time.perf_counter() - t0
        record = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            **{k: round(v, 6) for k, v in zip(keys, values)},
            "images_per_s": round(images / dt, 2) if dt > 0 else None,
        }
        if self.main:
            self.run.append_metrics(record)
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and v is not None:
                    self.tb.add_scalar(k, v, self.progress.step)
        if bar is not None:
            bar.set_postfix(
                {k: f"{v:.3f}" for k, v in zip(keys, values)} | {"img/s": f"{images / dt:.0f}"}, refresh=False
            )
        self.last_metrics = record

    def _preview(self, epoch: int) -> None:
        metrics = self.recipe.epoch_metrics()
        if metrics and self.main:
            record = {"step": self.progress.step, "epoch": epoch, **metrics}
            self.run.append_metrics(record)
            self.last_metrics = {**self.last_metrics, **metrics}
            if self.tb is not None:
                for k, v in metrics.items():
                    self.tb.add_scalar(k, v, self.progress.step)
        if self.main:
            grid = viz.make_grid(self.recipe.preview(), nrow=4)
            viz.save_image(grid, self.run.previews / f"epoch-{epoch:04d}.png")
            if self.tb is not None:
                self.tb.add_image("preview", grid, self.progress.step)

    def _on_signal(self, signum, _frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    def fit(self) -> dict:
        """Train until cfg.epochs or cfg.max_steps; return a summary of the run."""
        cfg, recipe, p = self.cfg, self.recipe, self.progress
        batches = recipe.batches
        per_epoch = len(batches)
        total = cfg.total_steps(per_epoch)
        self._first_bad = torch.tensor(-1, device=recipe.device)
        self.last_metrics: dict = {}
        # Signal handlers can only be installed from the main thread (e.g. not under a web UI's worker).
        in_main = threading.current_thread() is threading.main_thread()
        old = (
            {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        )
        bar = tqdm(
            total=total,
            initial=p.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            desc=f"{cfg.recipe}",
            disable=not self.progress_bar,
        )
        start_time = time.perf_counter()
        start_step = p.step
        if self.main:
            for name, obj in recipe.run_files().items():
                write_json_atomic(self.run.path / name, obj)
        try:
            sums: dict[str, torch.Tensor] = {}
            count, images, t0 = 0, 0, time.perf_counter()
            while p.step < total:
                for batch in batches.epoch(p.epoch, p.batch):
                    out = recipe.train_step(batch)
                    p.step += 1
                    p.batch += 1
                    count += 1
                    images += batches.batch_size
                    for k, v in out.items():
                        v = v.detach().float()
                        sums[k] = sums[k] + v if k in sums else v
                    # Record the first non-finite step without a host sync (read back at log time).
                    bad = ~torch.isfinite(torch.stack(list(out.values()))).all()
                    self._first_bad = torch.where(bad & (self._first_bad < 0), p.step, self._first_bad)
                    bar.update(1)
                    if p.step % cfg.log_every == 0 or p.step == total:
                        self._log(sums, count, t0, images, bar)
                        sums, count, images, t0 = {}, 0, 0, time.perf_counter()
                    if self._stop_signal is not None:
                        self.save()
                        raise TrainingInterrupted(p.step, str(self.run.path), self._stop_signal)
                    if p.step % cfg.checkpoint_every == 0:
                        self.save()
                    if p.step >= total:
                        break
                epoch_done = p.batch >= per_epoch
                last = p.step >= total
                if epoch_done and (p.epoch == 0 or p.epoch % cfg.preview_every == 0) or last:
                    self._preview(p.epoch)
                if epoch_done:
                    p.epoch, p.batch = p.epoch + 1, 0
            if count:
                self._log(sums, count, t0, images, bar)
            self.save()
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()
            for s, h in old.items():
                signal.signal(s, h)
        if self.main and self.run.metrics.exists():
            viz.plot_losses(self.run.metrics, self.run.loss_plot, title=f"{cfg.recipe} on {cfg.data}")
        elapsed = time.perf_counter() - start_time
        steps = p.step - start_step
        return {
            "run_dir": str(self.run.path),
            "steps": p.step,
            "epochs_completed": p.epoch,
            "seconds": round(elapsed, 2),
            "images_per_s": round(steps * batches.batch_size / elapsed, 1) if elapsed > 0 and steps else None,
            "last_metrics": self.last_metrics,
            "checkpoint": str(checkpoint_path(self.run.checkpoints, p.step)),
            "previews": str(self.run.previews),
            "loss_plot": str(self.run.loss_plot),
        }
