"""One calibration: each measured choice of `gankit.cpu` measured once per machine, kept in one file of
one schema, obeyed when cached, measured again when damaged or of another schema, and never run unless
asked (the suite runs with `$GANKIT_CPU_CALIBRATION=off`; the `calibrating` fixture turns it on)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from gankit.cpu import algorithms, calibration, frequency, settings, wgrad, winograd
from gankit.cpu.machine import machine_key
from gankit.errors import GankitError

CPU = torch.device("cpu")
F32, B16 = torch.float32, torch.bfloat16


def _write(sections: dict, schema: int = calibration.SCHEMA) -> None:
    calibration.forget()
    calibration.path().parent.mkdir(parents=True, exist_ok=True)
    machines = {machine_key(CPU): sections}
    calibration.path().write_text(json.dumps({"schema": schema, "machines": machines}))


def _sections() -> dict:
    data = json.loads(calibration.path().read_text())
    assert data["schema"] == calibration.SCHEMA
    return data["machines"][machine_key(CPU)]


def test_off_takes_the_documented_defaults_and_writes_nothing(monkeypatch):
    monkeypatch.setattr(algorithms, "calibrate", lambda: pytest.fail("measured"))
    monkeypatch.setattr(frequency, "calibrate", lambda dtypes: pytest.fail("measured"))
    assert algorithms.verdicts() == {n: True for n in algorithms.NAMES}
    assert frequency.factor(F32) == frequency.FREQUENCY_FACTORS[F32]
    assert calibration.known()["conv_algorithms"]["unmeasured"] and not calibration.path().exists()


def test_a_bad_mode_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv(calibration.ENV, "sometimes")
    with pytest.raises(GankitError, match=r"\$GANKIT_CPU_CALIBRATION='sometimes': expected auto, on or off"):
        algorithms.verdicts()


def test_the_conv_algorithms_are_measured_once_per_machine_and_cached(
    calibrating, cpu_env, monkeypatch, capsys
):
    """The first qualifying layer times the three calibration layers both ways (leaving the random
    streams alone); the verdicts go to the file's section `conv_algorithms` and stay in the process; a
    cached verdict is obeyed; one forced path leaves the others measured; a damaged entry, or a file of
    another schema, is measured again."""
    layer, x = nn.Conv2d(256, 512, 4, 1, 1), torch.empty(1, 256, 32, 32)
    up, xu = nn.ConvTranspose2d(1024, 256, 4, 2, 1), torch.empty(1, 1024, 16, 16)
    before = torch.get_rng_state()
    with torch.no_grad():
        use = winograd.applies(layer, x, F32)
    assert torch.equal(torch.get_rng_state(), before)
    entry = _sections()["conv_algorithms"]
    for name in algorithms.NAMES:
        e = entry[name]
        assert e["direct_ms"] > 0 and e["fast_ms"] > 0
        assert e["speedup"] == pytest.approx(e["direct_ms"] / e["fast_ms"], rel=0.01)
        assert e["use"] is (e["speedup"] >= algorithms.MIN_SPEEDUP)
    assert use is entry["winograd"]["use"] and wgrad.applies(up, xu, F32) is entry["gemm_wgrad"]["use"]
    assert "fp32 convolutions: winograd " in capsys.readouterr().err
    monkeypatch.setattr(algorithms, "calibrate", lambda: pytest.fail("measured twice"))
    assert winograd.applies(layer, x, F32) is use
    for cached in (True, False):
        _write(
            {
                "conv_algorithms": {
                    "winograd": {"use": cached},
                    "gemm_wgrad": {"use": not cached},
                    "small_map_wide": {"use": cached},
                }
            }
        )
        assert winograd.applies(layer, x, F32) is cached and wgrad.applies(up, xu, F32) is not cached
        cpu_env("GANKIT_CPU_GEMM_WGRAD", "on")
        assert winograd.applies(layer, x, F32) is cached and wgrad.applies(up, xu, F32)
        cpu_env("GANKIT_CPU_GEMM_WGRAD", None)
    fresh = {
        "winograd": {"use": False, "speedup": 0.5},
        "gemm_wgrad": {"use": True, "speedup": 2.0},
        "small_map_wide": {"use": True, "speedup": 2.0},
        "seconds": 0,
    }
    monkeypatch.setattr(algorithms, "calibrate", lambda: fresh)
    damaged = {"winograd": {"use": "yes"}, "gemm_wgrad": {"use": True}, "small_map_wide": {"use": True}}
    for stale, schema in (
        ({"use": True, "speedup": 2.0}, calibration.SCHEMA),
        (damaged, calibration.SCHEMA),
        (fresh | {"winograd": {"use": True}}, 0),
    ):
        _write({"conv_algorithms": stale}, schema)
        assert not winograd.applies(layer, x, F32) and wgrad.applies(up, xu, F32)


def test_the_frequency_domain_is_measured_per_dtype_once_per_machine(calibrating, monkeypatch, capsys):
    """Timed against the direct kernel the first time a layer qualifies in a dtype, for that dtype only;
    the crossover it measured moves the rule to it; a cached factor is obeyed without timing; an entry
    of an older shape is measured again. Other sections of the file are kept."""
    layer, x = nn.ConvTranspose2d(256, 128, 5, 1, 2), torch.empty(512, 256, 7, 7)
    _write({"precision": {"precision": "fp32"}})
    before = torch.get_rng_state()
    with torch.no_grad():  # as when sampling: the measurement still runs forward and backward
        use = frequency.applies(layer, x, F32)
    assert torch.equal(torch.get_rng_state(), before)
    sections = _sections()
    assert set(sections) == {"precision", "frequency_conv/fp32"}  # bf16, unused, is not measured
    e = sections["frequency_conv/fp32"]
    assert e["direct_ms"] > e["small_direct_ms"] > 0 and e["frequency_ms"] > e["small_frequency_ms"] > 0
    points = [(32, e["small_direct_ms"], e["small_frequency_ms"]), (256, e["direct_ms"], e["frequency_ms"])]
    crossover = frequency._crossover_batch(points, frequency.FREQUENCY_MIN_SPEEDUP)
    assert e["crossover_batch"] == (None if crossover is None else pytest.approx(crossover, abs=0.1))
    if crossover is not None and crossover < 500:  # the rule puts the crossover where it was measured
        for n, side in ((int(crossover) + 2, True), (int(crossover) - 2, False)):
            assert n < 1 or frequency.applies(layer, x[:n], F32) is side
    assert use is (e["factor"] > 0 and (crossover or 1e9) < 512)
    assert "frequency-domain convolutions in fp32: " in capsys.readouterr().err
    monkeypatch.setattr(frequency, "calibrate", lambda dtypes: pytest.fail("measured twice"))
    assert frequency.applies(layer, x, F32) is use  # the process keeps its factor
    measured = []

    def bf16_only(dtypes):
        measured.extend(dtypes)
        return {"bf16": {"factor": 0.0, "crossover_batch": None, "speedup": 0.9, "batch": 64, "seconds": 0.0}}

    monkeypatch.setattr(frequency, "calibrate", bf16_only)
    with torch.autocast("cpu", B16):
        assert not frequency.applies(layer, x, B16)  # never pays in bf16 here
    assert measured == ["bf16"]
    _write({"frequency_conv/fp32": {"factor": 0.0}, "frequency_conv/bf16": {"factor": 4.0}})
    assert not frequency.applies(layer, x, F32)  # the cache is obeyed
    with torch.autocast("cpu", B16):
        assert frequency.applies(layer, x, B16)  # per dtype: bf16 at 512 with factor 4
        assert not frequency.applies(layer, x[:64], B16)  # ... not at 64
    fresh = {"fp32": {"factor": 4.0, "crossover_batch": 128.0, "speedup": 1.2, "batch": 256, "seconds": 0.0}}
    monkeypatch.setattr(frequency, "calibrate", lambda dtypes: fresh)
    for stale in ({"use": True, "speedup": 1.3}, {"factor": None}):
        _write({"frequency_conv/fp32": stale})
        assert frequency.applies(layer, x, F32)


def test_on_measures_again_once_per_process(calibrating, monkeypatch):
    calls = []
    monkeypatch.setenv(calibration.ENV, "on")
    _write({"conv_algorithms": {n: {"use": False} for n in algorithms.NAMES}})
    fresh = {n: {"use": True, "speedup": 2.0} for n in algorithms.NAMES}
    monkeypatch.setattr(algorithms, "calibrate", lambda: calls.append(1) or fresh)
    assert algorithms.verdicts() == {n: True for n in algorithms.NAMES} and algorithms.verdicts()
    assert calls == [1] and _sections()["conv_algorithms"]["winograd"]["use"] is True


def test_settings_are_read_once_and_override_changes_them_for_a_block(cpu_env):
    s = settings.current()
    assert all(mode == "auto" for mode in s.modes.values()) and settings.current() is s
    with settings.override(winograd="off", precision="bf16") as inner:
        assert inner.mode("winograd") == "off" and not inner.enabled("winograd") and inner.precision == "bf16"
        assert settings.current() is inner
    assert settings.current() is s
    with pytest.raises(ValueError, match="override"):
        with settings.override(winograd="maybe"):
            pass
    cpu_env("GANKIT_CPU_WINOGRAD", "on")
    assert settings.current().forced("winograd") is True and settings.current().forced("gemm_wgrad") is None
    assert any(line.startswith("GANKIT_CPU_WINOGRAD") and " on " in line for line in settings.describe())
    with pytest.raises(GankitError, match=r"\$GANKIT_CPU_WINOGRAD='1': expected auto, on or off"):
        cpu_env("GANKIT_CPU_WINOGRAD", "1")
    with pytest.raises(GankitError, match=r"\$GANKIT_WINOGRAD is no longer read: set \$GANKIT_CPU_WINOGRAD"):
        cpu_env("GANKIT_WINOGRAD", "0")
