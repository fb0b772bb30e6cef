"""Data-parallel training across processes launched by `torchrun` (one node or several).

    torchrun --nproc_per_node=N -m gankit train ...                         # one machine
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=N -m gankit train ...

Every process builds the same networks from `--seed`, trains on its own shard of each global batch
(`--batch-size` is per process: the global batch is N times larger) and averages the gradients of
every network's parameters across processes before each optimiser step, so all replicas stay equal.
Gradients are all-reduced at the optimiser step (one flat buffer per dtype) rather than by wrapping
the networks in `DistributedDataParallel`: GAN steps run several restricted backward passes over
shared forward graphs (`backward(inputs=...)`, `retain_graph`), which DDP's per-module reducer does
not support; the arithmetic is the same. Only process 0 writes files and prints progress.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..errors import GankitError

_control = None  # the gloo group for control messages when the training backend is nccl


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA) for the duration of a
    training run; yield this process's device (cuda:LOCAL_RANK on CUDA). Without torchrun: a no-op."""
    if not launched() or active():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise GankitError(f"--device {device}: data-parallel training runs on CUDA (nccl) or CPU (gloo)")
    global _control
    try:
        dist.init_process_group(backend)
        # small control messages (stop flags, choices) travel over gloo between host memories, so
        # that checking them every step never waits for the GPU
        _control = dist.new_group(backend="gloo") if backend == "nccl" else None
    except (RuntimeError, ValueError) as e:
        raise GankitError(f"torchrun: cannot join the process group ({e})") from None
    try:
        yield device
        dist.barrier()  # leave together: a process that tears down gloo early aborts its peers
    finally:
        _control = None
        dist.destroy_process_group()


def _flat_all_reduce(tensors: list[torch.Tensor], average: bool) -> None:
    """All-reduce (sum or mean) a list of tensors in place, one collective per dtype."""
    world = world_size()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        if average:
            flat.div_(world)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of `params` across processes (those that have one: the same on every
    process, since each runs the same step)."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads and world_size() > 1:
        _flat_all_reduce(grads, average=True)


def sync_gradients_before_steps(optimizers: Iterable[torch.optim.Optimizer]) -> list:
    """Make each optimiser average its parameters' gradients across processes before it steps."""

    def hook(optimizer, _args, _kwargs):
        average_gradients(p for g in optimizer.param_groups for p in g["params"])

    return [o.register_step_pre_hook(hook) for o in optimizers]


def broadcast_state(modules: Iterable[torch.nn.Module]) -> None:
    """Give every process process 0's parameters and buffers (as DDP does when it starts)."""
    if world_size() < 2:
        return
    with torch.no_grad():
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                c = t.data.contiguous()  # the tensor itself unless channels-last
                dist.broadcast(c, 0)
                if c.data_ptr() != t.data_ptr():
                    t.data.copy_(c)


def average_buffers(modules: Iterable[torch.nn.Module]) -> None:
    """Average floating-point buffers (batch-norm running statistics) across processes, so that the
    replicas, their EMA copies and the checkpoint agree; integer buffers (counters) are equal."""
    if world_size() < 2:
        return
    bufs = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if bufs:
        _flat_all_reduce(bufs, average=True)


def all_reduce_values(values: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """The mean (or max) of a tensor of scalars over processes (returned; the input is kept)."""
    if world_size() < 2:
        return values
    out = values.clone()
    dist.all_reduce(out, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return out if op == "max" else out / world_size()


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any (e.g. a stop signal that reached one)."""
    if world_size() < 2:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, dist.ReduceOp.MAX, group=_control)  # host memory: no wait for the GPU
    return bool(t.item())


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """The concatenation over processes (in rank order) of equally shaped tensors."""
    if world_size() < 2:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def from_main(obj):
    """Process 0's value of a small picklable object, on every process."""
    if world_size() < 2:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0, group=_control)
    return box[0]


def on_main(fn, *args):
    """Run `fn(*args)` on process 0 only (e.g. checks that create files); a GankitError it raises is
    raised on every process, so all stop with the same one-line message."""
    error = None
    if is_main():
        try:
            fn(*args)
        except GankitError as e:
            error = str(e)
    error = from_main(error)
    if error is not None:
        raise GankitError(error)


def shard() -> tuple[int, int]:
    """(this process's rank, number of processes): which slice of each global batch is ours."""
    return rank(), world_size()


def shard_rows(k: int, batch_size: int, shard: tuple[int, int]) -> slice:
    """Rows of an epoch's order that global batch `k` gives to process `shard[0]` of `shard[1]`:
    global batch k is rows [k*B*N, (k+1)*B*N), in rank order, so N processes at batch B see exactly
    the batches one process sees at batch N*B."""
    r, n = shard
    start = k * batch_size * n + r * batch_size
    return slice(start, start + batch_size)


def process_seed(seed: int, step: int) -> int:
    """The seed of process `rank` > 0 for its own draws (noise, crops, dropout) from step `step`."""
    return (seed * 1_000_003 + rank() * 7_919 + step * 104_729) % 2**63
