"""Kill a real training process and resume it: the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.errors import GankitError

ARGS = [
    "--data",
    "mnist",
    "--batch-size",
    "8",
    "--lr",
    "2e-4",
    "--epochs",
    "6",
    "--checkpoint-every",
    "20",
    "--log-every",
    "10",
    "--keep-checkpoints",
    "2",
    "--precision",
    "fp32",
]


def gankit_cli(*args, **kw):
    # One CPU thread: with two, MKL's vector math (torch.tanh on a small batch) takes one of two code
    # paths per process, so two *fresh* runs can differ in the last bits one time in ~10. That is
    # kernel nondeterminism, not resume; the resume logic is what this test pins down, bit for bit.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gankit", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def final_weights(run):
    ckpts = sorted((run / "checkpoints").glob("step-*.safetensors"))
    return ckpts[-1].name, {k: v for k, v in load_file(ckpts[-1]).items() if k.startswith("modules.")}


def wait_for_checkpoint(proc, run, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if list((run / "checkpoints").glob("step-*.safetensors")) if (run / "checkpoints").exists() else []:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.long(40)
@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(idx_dir, tmp_path):
    ref = tmp_path / "ref"
    p = gankit_cli("train", "dcgan", *ARGS, "--data-dir", str(idx_dir), "--out", str(ref))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err

    run = tmp_path / "killed"
    p = gankit_cli("train", "dcgan", *ARGS, "--data-dir", str(idx_dir), "--out", str(run))
    wait_for_checkpoint(p, run)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = sorted((run / "checkpoints").glob("step-*"))[-1].name
    assert killed_at != "step-00000192.safetensors", "run finished before it was killed"

    p = gankit_cli("train", "--resume", str(run), "--data-dir", str(idx_dir))  # data may move
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    name_a, a = final_weights(ref)
    name_b, b = final_weights(run)
    assert name_a == name_b == "step-00000192.safetensors"
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 192  # no duplicated stretch in the log


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(idx_dir, tmp_path):
    run = tmp_path / "r"
    p = gankit_cli(
        "train", "dcgan", *ARGS, "--checkpoint-every", "100000", "--data-dir", str(idx_dir), "--out", str(run)
    )
    while not (run / "metrics.jsonl").exists():
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM
    assert "checkpoint saved, continue with: gankit train --resume" in err and "Traceback" not in err
    assert len(list((run / "checkpoints").glob("step-*.safetensors"))) == 1


def test_resume_refuses_model_changes_and_finished_runs(idx_dir, tmp_path):
    run = tmp_path / "r"
    gankit.train(
        "dcgan", data="mnist", data_dir=str(idx_dir), max_steps=3, batch_size=32, out=str(run), progress=False
    )
    with pytest.raises(GankitError, match="--latent-dim 64: would change the model.*latent_dim=100"):
        gankit.resume(run, latent_dim=64, progress=False)
    with pytest.raises(GankitError, match="--lr 0.1: cannot change when resuming"):
        gankit.resume(run, lr=0.1, progress=False)
    with pytest.raises(GankitError, match="run already finished \\(3 steps\\)"):
        gankit.resume(run, progress=False)
    with pytest.raises(GankitError, match="may only lengthen training \\(2 steps < the run's 3\\)"):
        gankit.resume(run, max_steps=2, progress=False)
    s = gankit.resume(run, max_steps=5, progress=False)
    assert s["steps"] == 5
    with pytest.raises(GankitError, match="already holds a gankit run"):
        gankit.train("dcgan", data="mnist", data_dir=str(idx_dir), out=str(run), progress=False)
