"""Run by tests/test_distributed.py under torchrun: `python -m torch.distributed.run ... ddp_worker.py
MODE JSON`. MODE `train`: gankit.train(**JSON). MODE `syncbn`: check CrossProcessBatchNorm against
BatchNorm2d on the concatenated batch (outputs, input and parameter gradients, running statistics)."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

import gankit
from gankit.engine import distributed
from gankit.nn.syncbn import convert_batchnorm


def check_syncbn(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(world * 3, 4, 5, 5, generator=g) * 3 + 1
    w = torch.randn(world * 3, 4, 5, 5, generator=g)
    ref = torch.nn.BatchNorm2d(4)
    ref.weight.data.uniform_(0.5, 1.5, generator=g)
    sync = convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)))[0]
    sync.load_state_dict(ref.state_dict())
    xr = x.clone().requires_grad_(True)
    yr = ref(xr)
    (yr * w).sum().backward()
    mine = x[rank * 3 : (rank + 1) * 3].clone().requires_grad_(True)
    y = sync(mine)
    (y * w[rank * 3 : (rank + 1) * 3]).sum().backward()
    distributed.average_gradients(sync.parameters())
    result = {
        "out": torch.allclose(y, yr[rank * 3 : (rank + 1) * 3].detach(), atol=1e-5),
        "input_grad": torch.allclose(mine.grad, xr.grad[rank * 3 : (rank + 1) * 3], atol=1e-5),
        # each process holds 1/world of the summed loss: averaged gradients are the total / world
        "weight_grad": torch.allclose(sync.weight.grad * world, ref.weight.grad, atol=1e-4),
        "running": torch.allclose(sync.running_var, ref.running_var, atol=1e-5)
        and torch.allclose(sync.running_mean, ref.running_mean, atol=1e-6),
    }
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, arg = sys.argv[1], json.loads(sys.argv[2])
    if mode == "train":
        gankit.train(progress=False, **arg)
    elif mode == "resume":
        gankit.resume(progress=False, **arg)
    else:
        check_syncbn(arg["out"])
