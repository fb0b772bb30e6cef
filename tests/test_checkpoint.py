import pytest
import torch

from gankit.engine.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    pack,
    rotate,
    save_checkpoint,
    unpack,
)
from gankit.errors import GankitError
from gankit.io import write_atomic


def test_pack_roundtrip_of_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), betas=(0.5, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "rng": torch.get_rng_state(), "n": 3, "x": None, "t": (1, "a")}
    tensors, skeleton = pack(state)
    back = unpack(tensors, skeleton)
    assert back["n"] == 3 and back["x"] is None and back["t"] == (1, "a")
    assert back["opt"]["param_groups"][0]["betas"] == (0.5, 0.9)
    assert set(back["opt"]["state"]) == {0, 1}  # int keys survive JSON
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["opt"])


def test_save_load_and_rotation(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(checkpoint_path(tmp_path, step), {"w": torch.full((2,), float(step)), "step": step})
    (tmp_path / ".step-00000005.safetensors.abc.tmp").write_bytes(b"half written")
    rotate(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert not list(tmp_path.glob("*.tmp"))
    state = load_checkpoint(checkpoint_path(tmp_path, 4))
    assert state["step"] == 4 and torch.equal(state["w"], torch.tensor([4.0, 4.0]))


def test_load_rejects_non_checkpoints(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x80\x04 pickled? never")
    with pytest.raises(GankitError, match="not a readable gankit checkpoint"):
        load_checkpoint(bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def fail(p):
        p.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_constant_then_linear_schedule_values_and_resume():
    from gankit.engine.schedules import constant_then_linear

    def lrs(opt, sched, n):
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = constant_then_linear(opt, total=100)
    values = lrs(opt, sched, 100)
    assert values[0] == values[49] == 2e-4  # constant for the first half
    assert values[75] == pytest.approx(1e-4)  # halfway down the decay
    assert values[99] == pytest.approx(4e-6) and opt.param_groups[0]["lr"] == 0.0  # zero at the end
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched2 = constant_then_linear(opt2, total=100)
    tensors, skeleton = pack(sched.state_dict())
    sched2.load_state_dict(unpack(tensors, skeleton))
    assert sched2.last_epoch == 100
