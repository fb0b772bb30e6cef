"""Data-parallel training under torchrun, on CPU with gloo and 2 processes (as CI runs it).

Every recipe: a 2-process run writes from process 0 only, checkpoints, and resumes in one process.
CycleGAN (instance norm: no batch statistics): one 2-process step at batch 1 equals one single-process
step at batch 2 on the same images, history pool included. Batch norm over the global batch
(`--sync-bn`) equals BatchNorm on the concatenated batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_recipe_contract import make_data, options

import gankit
from gankit.data.batches import InMemoryBatches, SemiSupervisedBatches
from gankit.data.unpaired import UnpairedBatches
from gankit.engine.checkpoint import load_checkpoint
from gankit.recipes import RECIPES

WORKER = Path(__file__).with_name("ddp_worker.py")
BUILT_IN = sorted(n for n, c in RECIPES.items() if c.__module__.startswith("gankit.recipes."))
CPU = torch.device("cpu")


def torchrun(mode: str, arg: dict, nproc: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANKIT_AUTO_PRECISION": "fp32"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    r = subprocess.run(
        [*cmd, str(WORKER), mode, json.dumps(arg)], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]


def last_state(run: Path) -> dict:
    return load_checkpoint(sorted((run / "checkpoints").glob("step-*.safetensors"))[-1])


# -- sharding ----------------------------------------------------------------------------------------
def test_processes_split_each_global_batch_in_rank_order():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    one = list(InMemoryBatches(images, 8, 3, CPU, shard=(0, 1)).epoch(1))
    two = [list(InMemoryBatches(images, 4, 3, CPU, shard=(r, 2)).epoch(1)) for r in (0, 1)]
    assert len(one) == len(two[0]) == len(two[1]) == 5
    for k, (x, _) in enumerate(one):
        assert torch.equal(x, torch.cat([two[0][k][0], two[1][k][0]]))
    a, b = images[:12], images[12:]
    one = list(UnpairedBatches(a, b, 4, 1, CPU, shard=(0, 1)).epoch(0))
    two = [list(UnpairedBatches(a, b, 2, 1, CPU, shard=(r, 2)).epoch(0, 1)) for r in (0, 1)]
    for k in range(1, len(one)):  # from batch 1 on (a resumed epoch)
        assert torch.equal(one[k][1], torch.cat([two[0][k - 1][1], two[1][k - 1][1]]))
    labels = torch.arange(10) % 5
    one = list(SemiSupervisedBatches(images[:10], labels, images, 4, 2, CPU, shard=(0, 1)).epoch(0))
    two = [
        list(SemiSupervisedBatches(images[:10], labels, images, 2, 2, CPU, shard=(r, 2)).epoch(0))
        for r in (0, 1)
    ]
    for k in range(len(one)):
        for i in range(3):
            assert torch.equal(one[k][i], torch.cat([two[0][k][i], two[1][k][i]]))


# -- processes ---------------------------------------------------------------------------------------
def test_batch_norm_over_the_global_batch(tmp_path):
    torchrun("syncbn", {"out": str(tmp_path / "r")})
    for rank in (0, 1):
        result = json.loads((tmp_path / f"r.{rank}.json").read_text())
        assert all(result.values()), (rank, result)


@pytest.mark.parametrize("name", BUILT_IN)
def test_two_processes_write_once_and_resume_in_one(name, tmp_path, idx_dir):
    cls = RECIPES[name]
    opts = options(cls, tmp_path, idx_dir, out=str(tmp_path / "run"))
    torchrun("train", {"recipe": name, **opts})
    run = tmp_path / "run"
    sessions = (run / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) == 1, "only process 0 writes"
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)
    assert len(steps) == len(
        {(json.loads(ln)["step"], ln) for ln in (run / "metrics.jsonl").read_text().splitlines()}
    )
    done = json.loads(sessions[0])["to_step"]
    state = last_state(run)
    assert state["progress"]["world"] == 2 and state["progress"]["step"] == done > 0
    epochs = opts["epochs"]
    summary = gankit.resume(run, epochs=epochs + 1, progress=False)
    assert last_state(run)["progress"]["world"] == 1 and summary["epochs_completed"] == epochs + 1
    # the step count was moved to the same epoch boundary in one process's (larger) steps
    resumed = json.loads((run / "sessions.jsonl").read_text().splitlines()[1])
    assert resumed["from_step"] >= done and resumed["to_step"] == summary["steps"]
    assert resumed["from_step"] * (epochs + 1) == resumed["to_step"] * epochs


def test_a_two_process_step_equals_one_step_on_the_concatenated_batch(tmp_path, idx_dir, one_thread, cpu_env):
    # Winograd runs on a batch's tile count: the single process's generator batch (4) would take it and
    # each process's (2) not, and the comparison is of the data-parallel machinery, not of algorithms
    cpu_env("GANKIT_CPU_WINOGRAD", "off")
    cls = RECIPES["cyclegan"]
    common = dict(
        make_data(cls.data_format, tmp_path, idx_dir),
        image_size=64,
        load_size=64,
        flip=False,
        generator="resnet",  # the U-Net's dropout draws differ per process; the ResNet has none
        resnet_blocks=2,
        pool_size=3,
        max_steps=2,
        epochs=5,
        log_every=1,
        precision="fp32",
        device="cpu",
    )
    torchrun("train", {"recipe": "cyclegan", **common, "batch_size": 1, "out": str(tmp_path / "two")})
    gankit.train("cyclegan", progress=False, **common, batch_size=2, out=str(tmp_path / "one"))
    two, one = last_state(tmp_path / "two"), last_state(tmp_path / "one")
    assert two["progress"]["step"] == one["progress"]["step"] == 2
    # the losses of both steps (logged as means over processes) agree to float rounding ...
    logs = [(p / "metrics.jsonl").read_text().splitlines() for p in (tmp_path / "one", tmp_path / "two")]
    for a, b in zip(*logs):
        a, b = json.loads(a), json.loads(b)
        for k in (k for k in a if k.startswith("loss")):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k
    # ... and so do the weights, but for Adam's first steps on near-zero gradients (a step of +-lr
    # whose sign is rounding): under 1% of the elements
    differ = total = 0
    for net, params in one["modules"].items():
        for k, v in params.items():
            d = (v - two["modules"][net][k]).abs()
            differ, total = differ + int((d > 1e-5).sum()), total + d.numel()
            assert d.max() <= 4.01 * 2e-4, (net, k)
    assert differ < 0.01 * total, (differ, total)
    for pool in ("pool_a", "pool_b"):  # one pool for both processes: same draws, same images
        assert torch.equal(one["extra"][pool]["rng"], two["extra"][pool]["rng"])
        assert torch.allclose(one["extra"][pool]["images"], two["extra"][pool]["images"], atol=1e-3)


def test_process_0_alone_calibrates_and_hands_the_verdicts_over(tmp_path, idx_dir, calibrating):
    """A calibrating 2-process CPU run measures the frequency-domain crossover and the fp32 algorithms
    once, in process 0, and the other process takes its answers (as with the precision): one message
    each, one file with one entry per section."""
    env = {**os.environ, "GANKIT_CPU_CALIBRATION": "auto"}
    env.update(OMP_NUM_THREADS="1", GANKIT_AUTO_PRECISION="fp32", GANKIT_DATA=str(tmp_path / "cache"))
    run = "-m torch.distributed.run --standalone --nproc_per_node=2 -m gankit train dcgan --data mnist"
    cmd = [sys.executable, *run.split(), "--data-dir", str(idx_dir), "--out", str(tmp_path / "run")]
    cmd += "--max-steps 1 --batch-size 128".split()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (r.stdout + r.stderr).count("frequency-domain convolutions in fp32: ") == 1
    assert (r.stdout + r.stderr).count("fp32 convolutions: winograd ") == 1
    cache = json.loads((tmp_path / "cache" / "calibration.json").read_text())
    assert cache["schema"] == 1
    (key, sections), *others = cache["machines"].items()
    assert not others and key.startswith("cpu|")
    assert set(sections) == {"frequency_conv/fp32", "conv_algorithms"}  # bf16: not used, not timed
    entry = sections["frequency_conv/fp32"]
    assert entry["factor"] >= 0 and entry["direct_ms"] > 0
