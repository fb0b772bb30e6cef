"""The command line: one-line errors without tracebacks, --json output, sample, demo wiring."""

import json
import subprocess
import sys

import pytest
from conftest import toy_images, write_idx
from PIL import Image

from gankit.cli import _fresh_dir, main
from gankit.recipes import RECIPES


def run_cli(*args):
    p = subprocess.run([sys.executable, "-m", "gankit", *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def one_line_error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("gankit: error: ") and "Traceback" not in err
    return err


def test_user_errors_are_one_line(capsys, tmp_path, idx_dir):
    assert "known datasets: emnist" in one_line_error(capsys, "train", "dcgan", "--data", "emnst")
    assert "nowhere: no such folder" in one_line_error(capsys, "train", "dcgan", "--data", "./nowhere")
    (tmp_path / "empty").mkdir()
    assert "no images found" in one_line_error(capsys, "train", "dcgan", "--data", str(tmp_path / "empty"))
    assert "--batch-size -4" in one_line_error(
        capsys, "train", "dcgan", "--data", "mnist", "--batch-size", "-4"
    )
    assert "not a gankit run directory" in one_line_error(capsys, "sample", str(tmp_path))
    assert "not a gankit run directory" in one_line_error(capsys, "train", "--resume", str(tmp_path))
    names = ", ".join(sorted(RECIPES))
    assert f"name a recipe ({names}) or give --resume" in one_line_error(capsys, "train")
    bad = tmp_path / "bad"
    bad.mkdir()
    images, labels = toy_images(4)
    write_idx(bad / "train-images-idx3-ubyte", images, compress=False).write_bytes(
        (bad / "train-images-idx3-ubyte").read_bytes()[:500]
    )
    write_idx(bad / "train-labels-idx1-ubyte.gz", labels)
    err = one_line_error(capsys, "train", "dcgan", "--data", "mnist", "--data-dir", str(bad))
    assert "train-images-idx3-ubyte: truncated IDX file" in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_bad_image_named_then_skipped(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(folder / f"{i}.png")
    (folder / "zz.jpg").write_bytes(b"garbage")
    err = one_line_error(capsys, "train", "dcgan", "--data", str(folder))
    assert "zz.jpg: not a PNG, JPEG, WebP, BMP, TIFF or GIF image; pass --skip-bad-images" in err
    code = main(
        [
            "train",
            "dcgan",
            "--data",
            str(folder),
            "--skip-bad-images",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 1


def test_argparse_rejects_wrong_types(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "dcgan", "--epochs", "many"])
    assert e.value.code == 2 and "expected int, got 'many'" in capsys.readouterr().err


def test_train_json_then_sample(idx_dir, tmp_path):
    code, out, err = run_cli(
        "train",
        "dcgan",
        "--data",
        "mnist",
        "--data-dir",
        str(idx_dir),
        "--max-steps",
        "3",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 3 and set(summary["last_metrics"]) >= {"loss_d", "loss_g", "step"}
    code, out, err = run_cli(
        "sample",
        str(tmp_path / "run"),
        "-n",
        "6",
        "-o",
        str(tmp_path / "g.png"),
        "--separate",
        str(tmp_path / "each"),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 6 and len(result["files"]) == 6
    assert Image.open(tmp_path / "g.png").size == (3 * 30 + 2, 2 * 30 + 2)
    assert Image.open(tmp_path / "each" / "0005.png").size == (28, 28)


def test_version_and_help():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("gankit ")
    code, out, _ = run_cli("train", "dcgan", "--help")
    assert code == 0 and "--ema" in out and "--resume" in out


def test_demo_runs_on_embedded_data(tmp_path, monkeypatch):
    """The README's main job, shortened to one epoch."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("demo", "--epochs", "1", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["run_dir"] == "runs/demo" and s["steps"] == 62
    # its previews come from an EMA generator sized to its ~500 steps (see DCGAN.demo_options)
    assert 0.9 <= json.loads((tmp_path / "runs/demo/config.json").read_text())["ema"] < 0.999
    assert (tmp_path / "runs/demo/previews/epoch-0000.png").exists()
    assert (tmp_path / "runs/demo/loss.png").exists() and (tmp_path / "runs/demo/config.json").exists()
    # a second demo does not clobber the first: cmd_demo names its folder with _fresh_dir (checked
    # here instead of a second 25-second training run)
    assert _fresh_dir("runs/demo") == "runs/demo-2"
    (tmp_path / "runs/demo-2").mkdir()
    assert _fresh_dir("runs/demo") == "runs/demo-3"


def test_sample_separate_only(idx_dir, tmp_path, capsys):
    import gankit

    gankit.train(
        "dcgan",
        data="mnist",
        data_dir=str(idx_dir),
        max_steps=1,
        batch_size=8,
        out=str(tmp_path / "r"),
        progress=False,
    )
    assert main(["sample", str(tmp_path / "r"), "-n", "3", "--separate", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["grid"] is None and sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
    ]
    assert not (tmp_path / "r" / "samples.png").exists()
    assert "-n 0: expected a positive" in one_line_error(capsys, "sample", str(tmp_path / "r"), "-n", "0")
