"""Markdown table of benchmarks/cuda.sh's results: images/s per recipe and batch, fp32 and bf16, in
channels-last and contiguous layouts, and under torch.compile; the GPU named above it.

    python benchmarks/cuda_table.py OUT_DIR   # reads OUT_DIR/cuda.jsonl and cuda-machine.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [
    ("fp32", "channels_last", None),
    ("fp32", "contiguous", None),
    ("bf16", "channels_last", None),
    ("bf16", "contiguous", None),
    ("bf16", "channels_last", "default"),
]


def table(folder: Path) -> str:
    """The Markdown text: one row per (recipe, batch), one column per configuration of COLUMNS."""
    m = json.loads((folder / "cuda-machine.json").read_text())
    rows = [json.loads(line) for line in (folder / "cuda.jsonl").read_text().splitlines() if line.strip()]
    cells: dict[tuple, dict] = {}
    for r in rows:  # "cyclegan (unet)" when measured, "cyclegan" when it failed: one row
        r["recipe"] = r["recipe"].split(" (")[0]
        key = (r["recipe"], r["batch_size"], r["precision"], r["memory_format"], r.get("compile"))
        cells[key] = r
    layout = {"channels_last": "CL", "contiguous": "NCHW"}
    head = ["work"] + [f"{p} {layout[f]}{' compile' if c else ''}" for p, f, c in COLUMNS]
    out = [
        f"GPU: {m.get('gpu')} ({m.get('gpu_memory_gib')} GiB), torch {m['torch']}, CUDA {m.get('cuda')}, "
        f"cuDNN {m.get('cudnn')}; images/s (peak allocated MiB), bench_train.py --loader memory.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" + " ---: |" * len(COLUMNS),
    ]
    for recipe, batch in dict.fromkeys((r["recipe"], r["batch_size"]) for r in rows):
        line = [f"{recipe} batch {batch}"]
        for p, f, c in COLUMNS:
            r = cells.get((recipe, batch, p, f, c))
            if r is None:
                line.append("-")
            elif r.get("failed"):
                line.append("failed")
            else:
                line.append(f"{r['images_per_s']:.0f} ({r['peak_memory_mb']:.0f})")
        out.append("| " + " | ".join(line) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/cuda")
    text = table(folder)
    (folder / "cuda.md").write_text(text)
    print(text)
