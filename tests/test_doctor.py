"""`gankit doctor [RECIPE]`: the machine, the CPU paths' settings and calibration, and each layer's path
in one real training step of a recipe."""

from __future__ import annotations

import json

import torch.nn as nn

from gankit.cli import main
from gankit.cpu import dispatch, settings


def _doctor(capsys, *args) -> tuple[int, str, str]:
    rc = main(["doctor", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_report_names_the_machine_the_settings_and_the_calibration(capsys):
    rc, out, _ = _doctor(capsys, "--json")
    r = json.loads(out)
    assert rc == 0 and r["machine"]["threads"] >= 1 and r["key"].startswith("cpu|")
    assert set(r["machine"]["features"]) >= {"avx2", "avx512f", "avx512_bf16", "amx"}
    assert r["settings"] == dict.fromkeys(settings.PATHS, "auto")
    assert r["calibration_mode"] == "off" and r["precision_auto"] == "fp32"  # the suite's settings
    assert r["forced_precision"] == "fp32" and "precision" not in r["sections"]  # forced: not consulted
    assert {"conv_algorithms", "frequency_conv/fp32"} <= set(r["sections"])
    assert all(e.get("unmeasured") for e in r["sections"].values())
    rc, out, _ = _doctor(capsys)
    assert rc == 0 and "machine: " in out and "GANKIT_CPU_WINOGRAD" in out and "winograd: on (default" in out
    assert "--precision auto means fp32 (forced by $GANKIT_AUTO_PRECISION)" in out


def test_a_recipe_step_shows_each_layers_path_and_follows_the_settings(capsys, cpu_env):
    """DCGAN at batch 160 in fp32: the generator's 7 px layer in the frequency domain (the documented
    factor, unmeasured, takes it from batch ~120), every convolution of both networks listed with a path
    its layer kind declares; switched off by its variable, that layer runs the stock kernel."""
    rc, out, _ = _doctor(capsys, "dcgan", "--batch-size", "160", "--precision", "fp32", "--json")
    rec = json.loads(out)["recipe"]
    assert rc == 0 and rec["batch_size"] == 160 and rec["precision"] == "fp32"
    rows = {(row["layer"], tuple(row["input"])): row for row in rec["layers"]}
    assert rows[("generator.up1", (160, 256, 7, 7))]["path"] == "frequency_conv"
    for row in rec["layers"]:
        assert row["path"] == "stock" or row["path"] in {p.name for p in dispatch.TABLE[row["kind"]]}
        assert row["calls"] >= 1 and row["dtype"] == "float32"
    from gankit.nn.dcgan import build_dcgan

    g, d = build_dcgan(28, 1, 100)
    convs = {
        f"{net}.{name}"
        for net, m in (("generator", g), ("discriminator", d))
        for name, layer in m.named_modules()
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
    }
    assert convs <= {row["layer"] for row in rec["layers"]}
    assert sum(rec["paths"].values()) == sum(row["calls"] for row in rec["layers"])
    cpu_env("GANKIT_CPU_FREQUENCY_CONV", "off")
    rc, out, _ = _doctor(capsys, "dcgan", "--batch-size", "160", "--precision", "fp32")
    line = next(line for line in out.splitlines() if "generator.up1" in line)
    assert rc == 0 and line.split()[-2] == "stock" and "160x256x7x7" in line


def test_bad_requests_are_one_line_errors(capsys):
    rc, out, err = _doctor(capsys, "pix2pix")
    assert rc == 1 and err.strip() == (
        "gankit: error: doctor pix2pix: --data is needed (the pix2pix recipe has no embedded demo data)"
    )
    rc, _, err = _doctor(capsys, "--batch-size", "4")
    assert rc == 1 and err.count("\n") == 1 and "--batch-size: only with a RECIPE" in err
