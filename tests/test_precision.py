"""`--precision auto`: decided by a measurement on this machine, cached, stored with the run."""

from __future__ import annotations

import json
import os
import platform
import sys

import pytest
import torch

import gankit
from gankit.cpu import calibration, machine
from gankit.cpu import precision as precision_module
from gankit.cpu.precision import auto_precision, calibrate
from gankit.device import resolve_precision
from gankit.errors import GankitError

CPU = torch.device("cpu")


def test_calibration_times_both_precisions_and_chooses_by_the_ratio():
    r = calibrate(CPU)
    assert r["fp32_ms"] > 0 and r["seconds"] < 30
    if r["bf16_ms"]:  # bf16 kernels of its own: both steps timed
        assert r["bf16_gemm_speedup"] >= precision_module.BF16_MIN_GEMM_SPEED
        assert r["bf16_speedup"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"], rel=0.02)
    else:  # emulated bf16 (an AVX2-only CPU): the matrix product's ratio decided, no bf16 step timed
        assert r["bf16_speedup"] == r["bf16_gemm_speedup"] < precision_module.BF16_MIN_GEMM_SPEED
    assert r["precision"] == ("bf16" if r["bf16_speedup"] >= precision_module.BF16_MIN_SPEEDUP else "fp32")
    assert r["machine"].startswith("cpu|") and set(r["cpu_features"]) >= {"avx512_bf16", "amx"}


def test_emulated_bf16_is_ruled_out_without_timing_its_step(monkeypatch):
    """Where bf16's matrix product is far slower than fp32's, its (seconds-long) step is never run."""
    monkeypatch.setattr(precision_module, "_gemm_ms", lambda dtype: 40.0 if dtype == torch.bfloat16 else 1.0)
    steps = []
    real = precision_module._calibration_step
    monkeypatch.setattr(
        precision_module, "_calibration_step", lambda d, dtype: steps.append(dtype) or real(d, dtype)
    )
    r = calibrate(CPU)
    assert steps == [None] and r["bf16_ms"] is None
    assert r["precision"] == "fp32" and r["bf16_speedup"] == r["bf16_gemm_speedup"] == 0.025


def test_a_bf16_step_that_fails_means_fp32(monkeypatch):
    """bf16 products faster than fp32's, but a bf16 step the device cannot run: fp32, not the ratio."""
    monkeypatch.setattr(precision_module, "_gemm_ms", lambda dtype: 1.0 if dtype == torch.bfloat16 else 2.0)
    real = precision_module._calibration_step

    def step(d, dtype):
        if dtype is None:
            return real(d, dtype)
        raise RuntimeError("no bf16 kernel")

    monkeypatch.setattr(precision_module, "_calibration_step", step)
    r = calibrate(CPU)
    assert r["precision"] == "fp32" and r["bf16_ms"] is None and r["bf16_speedup"] == 0.0
    assert r["bf16_gemm_speedup"] == 2.0


def test_machines_of_one_name_but_another_kind_are_measured_apart(monkeypatch):
    """A VM's "AMD EPYC" has been an AVX2-only Zen 3 and an AVX512-BF16 Zen 4: the key tells them apart."""
    key = machine.machine_key(CPU)
    assert machine.cpu_kind() in key
    monkeypatch.setattr(machine, "cpu_kind", lambda: "25/17 avx2+avx512f+avx512_bf16")
    other = machine.machine_key(CPU)
    monkeypatch.setattr(machine, "cpu_kind", lambda: "25/1 avx2")
    assert machine.machine_key(CPU) != other


def test_the_choice_is_measured_once_per_machine_and_cached(calibrating, monkeypatch, capsys):
    calls = []
    fake = {"precision": "bf16", "bf16_speedup": 1.7, "seconds": 0.2}
    monkeypatch.setattr(precision_module, "calibrate", lambda d: calls.append(d) or dict(fake))
    assert auto_precision(CPU) == "bf16" and auto_precision(CPU) == "bf16"
    assert len(calls) == 1
    assert "precision auto: bf16" in capsys.readouterr().err  # visible when it is measured
    cache = json.loads(calibration.path().read_text())
    assert cache["schema"] == calibration.SCHEMA
    assert cache["machines"][machine.machine_key(CPU)]["precision"]["precision"] == "bf16"
    calibration.forget()  # a new process: the file answers, nothing is measured
    assert auto_precision(CPU) == "bf16" and len(calls) == 1


def test_without_calibration_auto_means_fp32_and_nothing_is_written(monkeypatch):
    """`$GANKIT_CPU_CALIBRATION=off` (the test suite's setting): every section takes its default."""
    monkeypatch.delenv("GANKIT_AUTO_PRECISION")
    gankit.cpu.settings.refresh()
    monkeypatch.setattr(precision_module, "calibrate", lambda d: pytest.fail("measured"))
    assert auto_precision(CPU) == "fp32" and not calibration.path().exists()


def test_calibration_leaves_the_random_streams_alone():
    torch.manual_seed(5)
    calibrate(CPU)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))


def test_explicit_choices_and_the_override(monkeypatch):
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    # what the run chose at its start wins on the same device type, not on another
    assert resolve_precision("auto", CPU, chosen="cpu:bf16") == "bf16"
    monkeypatch.setenv("GANKIT_AUTO_PRECISION", "fp32")
    gankit.cpu.settings.refresh()
    assert resolve_precision("auto", CPU, chosen="cuda:bf16") == "fp32"
    monkeypatch.setenv("GANKIT_AUTO_PRECISION", "fp16")
    with pytest.raises(GankitError, match="GANKIT_AUTO_PRECISION"):
        gankit.cpu.settings.refresh()


def test_a_run_stores_its_choice_and_a_resume_keeps_it(monkeypatch, idx_dir, tmp_path):
    monkeypatch.setenv("GANKIT_AUTO_PRECISION", "bf16")
    gankit.cpu.settings.refresh()
    run = tmp_path / "run"
    opts = dict(data="mnist", data_dir=str(idx_dir), max_steps=1, batch_size=16)  # bf16 may be emulated: slow
    gankit.train("dcgan", **opts, out=str(run), progress=False)
    assert json.loads((run / "config.json").read_text())["auto_precision"] == "cpu:bf16"
    monkeypatch.setenv("GANKIT_AUTO_PRECISION", "fp32")  # the machine would now choose fp32
    gankit.cpu.settings.refresh()
    r = gankit.api.load_recipe(run, "cpu")
    assert r.amp_dtype == torch.bfloat16


_STEPS_FAULTS = """
import resource, torch
from gankit.cpu import keep_freed_host_memory
kept = keep_freed_host_memory()
def step():  # a step's activations: blocks alive together, all freed at its end
    blocks = [torch.ones(1 << 20) for _ in range(16)]  # 16 x 4 MiB
    blocks += [torch.ones(12 << 20) for _ in range(2)]  # 2 x 48 MiB: over glibc's mmap ceiling
    del blocks
step()
step()  # the heap has grown to a step's size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_freed_host_memory_is_reused_instead_of_faulted_in_again():
    import subprocess

    def run(env_value):
        env = {**os.environ, "GANKIT_CPU_HOST_MEMORY": env_value}
        out = subprocess.run([sys.executable, "-c", _STEPS_FAULTS], env=env, capture_output=True, text=True)
        kept, faults = out.stdout.split()
        return kept == "True", int(faults)

    kept, faults = run("auto")
    left_alone, default_faults = run("off")
    assert kept and not left_alone
    # 5 steps of 160 MiB: glibc's defaults hand the pages back and fault ~200k of them in again; kept,
    # none or the pages of one 48 MiB block (12,288, as the heap settles) are faulted again
    assert default_faults > 5 * 20_000 and faults < default_faults / 8, (faults, default_faults)


def test_the_channels_last_knob(cpu_env):
    from gankit.cpu import memory_format, place

    assert memory_format() == torch.channels_last and place(torch.zeros(2, 3, 4, 5)).stride()[1] == 1
    cpu_env("GANKIT_CPU_CHANNELS_LAST", "off")
    assert memory_format() == torch.contiguous_format and place(torch.zeros(2, 3, 4, 5)).is_contiguous()
    with pytest.raises(GankitError, match=r"\$GANKIT_CPU_CHANNELS_LAST='nchw': expected auto, on or off"):
        cpu_env("GANKIT_CPU_CHANNELS_LAST", "nchw")


def test_the_old_variable_names_are_refused_with_their_new_name(cpu_env):
    new = r"\$GANKIT_MEMORY_FORMAT is no longer read: set \$GANKIT_CPU_CHANNELS_LAST"
    with pytest.raises(GankitError, match=new):
        cpu_env("GANKIT_MEMORY_FORMAT", "contiguous")
