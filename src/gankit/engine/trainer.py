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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .. import viz
from ..cpu import keep_freed_host_memory
from ..errors import GankitError, TrainingInterrupted
from ..io import write_json_atomic
from ..nn.syncbn import convert_batchnorm
from . import distributed
from .checkpoint import checkpoint_path, load_latest, rotate, save_checkpoint
from .rundir import RunDir
from .schedules import restore_schedule, set_schedule_step


@dataclass
class Progress:
    """Where training stands: steps done, current epoch, next batch index within it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float | None = None  # the best value of the recipe's monitored metric so far (--eval-every)
    world: int = 1  # processes that trained it (a step is one global batch of world x batch size)


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
    """Restore RNG states saved by `rng_state` (CPU byte tensors, as torch requires)."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"].cpu())


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
        self.batches = recipe.batches
        self.per_epoch = len(self.batches)
        self.total = self.cfg.total_steps(self.per_epoch)
        self.world = distributed.world_size()
        self.progress = Progress(world=self.world)
        self.main = distributed.is_main()
        self.progress_bar = progress_bar and self.main
        self.tb = _tensorboard(run.path / "tensorboard") if self.main else None
        self.last_metrics: dict = {}
        self._stop_signal: int | None = None
        # The first step whose losses were not finite, kept on the device (read back at log time).
        self._first_bad = torch.tensor(-1, device=recipe.device)
        if self.world > 1:  # every optimiser averages its gradients over the processes first
            distributed.sync_gradients_before_steps(recipe.optimizers.values())
        self._new_window()

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
            restore_schedule(s, state["schedulers"][k])
        r.load_extra_state(state.get("extra", {}))
        set_rng_state(state["rng"])
        self.progress = Progress(**{"world": 1, **state["progress"]})

    def resume(self) -> None:
        """Continue from the run's newest readable checkpoint (with any number of processes)."""
        _, state = load_latest(self.run.checkpoints, self.recipe.device)
        self.load_state(state)
        if self.main:
            self.run.truncate_metrics(self.progress.step)
        if self.progress.world != self.world:
            self._rescale_progress()

    def _rescale_progress(self) -> None:
        """A run resumed with another number of processes: steps and batches count global batches,
        whose size changed. Keep the images seen in the current epoch (rounded down to a whole new
        global batch) and move the step count and the LR schedules to the same point."""
        p, old = self.progress, self.progress.world
        seen = p.batch * old  # in per-process batches
        p.batch = min(seen // self.world, self.per_epoch)
        p.step, p.world = p.epoch * self.per_epoch + p.batch, self.world
        for s in self.recipe.schedulers.values():
            set_schedule_step(s, p.step)

    def save(self) -> None:
        self._raise_if_nonfinite()
        distributed.average_buffers(self.recipe.modules.values())  # replicas agree on BN statistics
        if not self.main:
            return
        path = save_checkpoint(checkpoint_path(self.run.checkpoints, self.progress.step), self.state())
        rotate(self.run.checkpoints, self.cfg.keep_checkpoints, protect={path})

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until the run's total steps; return a summary of the run."""
        p = self.progress
        if self.recipe.device.type == "cpu":
            keep_freed_host_memory()
        start_step, start_time = p.step, time.perf_counter()
        with self._signals_caught(), self._progress_bar() as bar, self._session_recorded():
            self._start_replicas()
            self._write_run_files()
            while p.step < self.total:
                for batch in self.batches.epoch(p.epoch, p.batch):
                    self._step(batch, bar)
                    if p.step >= self.total:
                        break
                self._end_of_epoch()
            if self._count:
                self._log(bar)
            self.save()
        if self.main and self.run.metrics.exists():
            viz.plot_losses(
                self.run.metrics, self.run.loss_plot, title=f"{self.cfg.recipe} on {self.cfg.data}"
            )
        return self._summary(start_step, time.perf_counter() - start_time)

    def _step(self, batch, bar) -> None:
        """One optimisation step, then whatever falls due: a log line, a checkpoint, a stop."""
        p, cfg = self.progress, self.cfg
        out = self.recipe.train_step(batch)
        p.step, p.batch = p.step + 1, p.batch + 1
        self._accumulate(out)
        bar.update(1)
        if p.step % cfg.log_every == 0 or p.step == self.total:
            self._log(bar)
        if self._stopping():
            self.save()
            raise TrainingInterrupted(p.step, str(self.run.path), self._stop_signal)
        if cfg.eval_every and p.step % cfg.eval_every == 0:
            self._monitor()
        if p.step % cfg.checkpoint_every == 0:
            self.save()

    def _end_of_epoch(self) -> None:
        p, cfg = self.progress, self.cfg
        epoch_done = p.batch >= self.per_epoch
        if epoch_done and (p.epoch == 0 or p.epoch % cfg.preview_every == 0) or p.step >= self.total:
            self._preview(p.epoch)
        if epoch_done:
            p.epoch, p.batch = p.epoch + 1, 0

    # -- logging -------------------------------------------------------------------------------
    def _new_window(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._count, self._images, self._t0 = 0, 0, time.perf_counter()

    def _accumulate(self, out: dict[str, torch.Tensor]) -> None:
        for k, v in out.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._count += 1
        self._images += self.batches.batch_size * self.world
        # Record the first non-finite step without a host sync (read back at log time).
        bad = ~torch.isfinite(torch.stack(list(out.values()))).all()
        self._first_bad = torch.where(bad & (self._first_bad < 0), self.progress.step, self._first_bad)

    def _raise_if_nonfinite(self) -> None:
        bad = int(distributed.all_reduce_values(self._first_bad, "max"))  # every process stops together
        if bad >= 0:
            raise NonFiniteLoss(
                f"loss became NaN or infinite at step {bad}; stopped, the last good "
                f"checkpoint is kept in {self.run.checkpoints} (try a lower --lr)"
            )

    def _log(self, bar) -> None:
        keys = list(self._sums)
        means = torch.stack([self._sums[k] for k in keys]).div(self._count)
        values = distributed.all_reduce_values(means).tolist()  # one sync per log: means over processes
        self._raise_if_nonfinite()
        dt = time.perf_counter() - self._t0
        rate = self._images / dt if dt > 0 else None
        record = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            **{k: round(v, 6) for k, v in zip(keys, values)},
            # The learning rate each optimiser will use next (after this step's schedule update).
            **{f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.recipe.optimizers.items()},
            "images_per_s": round(rate, 2) if rate else None,
        }
        self._record(record)
        bar.set_postfix(
            {k: f"{v:.3f}" for k, v in zip(keys, values)} | {"img/s": f"{rate or 0:.0f}"}, refresh=False
        )
        self.last_metrics = record
        self._new_window()

    def _record(self, record: dict) -> None:
        """Append a metrics record (main process) and mirror its scalars to TensorBoard."""
        if self.main:
            self.run.append_metrics(record)
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and v is not None:
                    self.tb.add_scalar(k, v, self.progress.step)

    def _monitor(self) -> None:
        """Log the recipe's quality metric; keep the best checkpoint beside the latest ones."""
        name, value, lower_is_better = self.recipe.monitor()
        self._record({"step": self.progress.step, "epoch": self.progress.epoch, name: round(value, 4)})
        best = self.progress.best
        if best is None or (value < best if lower_is_better else value > best):
            self.progress.best = value
            if self.main:
                save_checkpoint(self.run.best_checkpoint, self.state())
                write_json_atomic(
                    self.run.checkpoints / "best.json",
                    {"step": self.progress.step, "metric": name, "value": value},
                )

    def _preview(self, epoch: int) -> None:
        metrics = self.recipe.epoch_metrics()
        if metrics:
            self._record({"step": self.progress.step, "epoch": epoch, **metrics})
            self.last_metrics = {**self.last_metrics, **metrics}
        if self.main:
            grid = viz.make_grid(self.recipe.preview(), nrow=self.recipe.preview_columns)
            viz.save_image(grid, self.run.previews / f"epoch-{epoch:04d}.png")
            if self.tb is not None:
                self.tb.add_image("preview", grid, self.progress.step)

    def _write_run_files(self) -> None:
        if self.main:
            for name, obj in self.recipe.run_files().items():
                write_json_atomic(self.run.path / name, obj)

    def _summary(self, start_step: int, elapsed: float) -> dict:
        p = self.progress
        steps = p.step - start_step
        return {
            "run_dir": str(self.run.path),
            "steps": p.step,
            "epochs_completed": p.epoch,
            "seconds": round(elapsed, 2),
            "images_per_s": round(steps * self.batches.batch_size * self.world / elapsed, 1)
            if elapsed > 0 and steps
            else None,
            "last_metrics": self.last_metrics,
            "checkpoint": str(checkpoint_path(self.run.checkpoints, p.step)),
            "previews": str(self.run.previews),
            "loss_plot": str(self.run.loss_plot),
        }

    # -- processes -----------------------------------------------------------------------------
    def _start_replicas(self) -> None:
        """Under torchrun: every process starts from process 0's weights, and draws its own noise,
        crops and dropout masks from a seed derived from --seed, its rank and the step."""
        if self.world < 2:
            return
        if self.cfg.sync_bn:
            for m in self.recipe.modules.values():
                convert_batchnorm(m)
        distributed.broadcast_state(self.recipe.modules.values())
        if not self.main:
            torch.manual_seed(distributed.process_seed(self.cfg.seed, self.progress.step))

    def _stopping(self) -> bool:
        """A stop signal was caught (by any process: they stop at the same step)."""
        if self.world > 1:
            return distributed.any_process(self._stop_signal is not None)
        return self._stop_signal is not None

    # -- context -------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    @contextmanager
    def _signals_caught(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current step, save and stop. Handlers can only be installed from
        the main thread (not, e.g., under a web UI's worker thread)."""
        in_main = threading.current_thread() is threading.main_thread()
        old = (
            {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        )
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextmanager
    def _session_recorded(self) -> Iterator[None]:
        """Record the steps and wall time of this start (or resume) of the run in sessions.jsonl, also when
        it stops on a signal."""
        start_step, t0 = self.progress.step, time.perf_counter()
        try:
            yield
        finally:
            if self.main and self.progress.step > start_step:
                self.run.record_session(start_step, self.progress.step, time.perf_counter() - t0)

    @contextmanager
    def _progress_bar(self) -> Iterator[tqdm]:
        bar = tqdm(
            total=self.total,
            initial=self.progress.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            desc=f"{self.cfg.recipe}",
            disable=not self.progress_bar,
        )
        try:
            yield bar
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()
