"""The training loop users see beside the step the other benchmarks time, interleaved.

`step`: the recipe's `train_step` alone on the in-memory loader (as benchmarks/bench_train.py builds
it: the same config, as many images and steps as the loop), its rate in windows of 50 steps. `loop`:
`gankit train` itself, in its own process, on real data, with the recipe's default log, preview and
checkpoint frequencies (and `--set` overrides, e.g. `ema=0.999`): its median logged images/s (each log
line's rate over its 50 steps; the first line, the warm-up, left out), to set beside the step's median
window, and its whole-run rate (every step, preview, checkpoint and log line, first step to last
checkpoint). Rounds alternate the two, so drifts of a shared VM fall on both.

    python benchmarks/bench_loop.py --data fashion-mnist --data-dir /usr/share/datasets/fashion-mnist \
        --epochs 2 --rounds 3 --set ema=0.999
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ResultLog  # noqa: E402  (this folder)

HERE = Path(__file__).resolve().parent


_STEP = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import bench_train
from gankit.cpu import keep_freed_host_memory
from gankit.device import pick_device
from gankit.recipes import get_recipe

recipe, precision, sets = sys.argv[2], sys.argv[4], json.loads(sys.argv[6])
batch, steps, n_images = int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[7])
torch.manual_seed(0)
keep_freed_host_memory()
cls, dev = get_recipe(recipe), pick_device("cpu")
cfg = cls.Config(precision=precision, batch_size=batch, device="cpu")
bench_train.apply_sets(cfg, sets)
r = bench_train.image_recipe(recipe, cls, cfg, dev, n_images)
def batches():
    epoch = 0
    while True:
        yield from r.batches.epoch(epoch)
        epoch += 1
it = batches()
for _ in range(20):
    r.train_step(next(it))
windows, done = [], 0
while done < steps:
    t0 = time.perf_counter()
    for _ in range(50):
        out = r.train_step(next(it))
    torch.stack(list(out.values())).tolist()
    windows.append(50 * batch / (time.perf_counter() - t0))
    done += 50
print(json.dumps(windows))
"""


def step_rates(recipe: str, batch: int, precision: str, steps: int, sets: list[str], n_images: int) -> dict:
    """`steps` train_step calls (after 20 to warm up) in a fresh process, on the in-memory loader over
    `n_images` random images (the real data's count), timed in windows of 50 steps like the loop's log."""
    args = [str(HERE), recipe, str(batch), precision, str(steps), json.dumps(sets), str(n_images)]
    out = subprocess.run([sys.executable, "-c", _STEP, *args], check=True, capture_output=True, text=True)
    windows = json.loads(out.stdout.strip().splitlines()[-1])
    return {"median_window": statistics.median(windows), "windows": windows}


def loop_rates(recipe: str, opts: list[str], out: Path) -> dict:
    """`gankit train RECIPE OPTS --json` in a fresh process: its summary, and the rates it logged."""
    cmd = [sys.executable, "-m", "gankit", "train", recipe, *opts, "--out", str(out), "--json"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout)
    logged = [
        json.loads(line).get("images_per_s") for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r for r in logged[1:] if r]
    return {
        "median_logged": statistics.median(logged),
        "whole_run": summary["images_per_s"],
        "seconds": summary.get("seconds"),
        "steps": summary["steps"],
        "logged": logged,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="dcgan")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--epochs", type=int, default=2, help="of the loop (default 2: 1,874 steps at batch 64)")
    ap.add_argument(
        "--step-steps",
        type=int,
        default=None,
        help="timed steps of the step side (default: as many as the loop's)",
    )
    ap.add_argument(
        "--images", type=int, default=60000, help="images in the step side's loader (the data's count)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config field, both sides"
    )
    args = ap.parse_args()
    opts = ["--data", args.data, "--batch-size", str(args.batch_size), "--precision", args.precision]
    opts += ["--epochs", str(args.epochs)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    for item in args.set:
        key, _, value = item.partition("=")
        opts += [f"--{key.replace('_', '-')}", value]
    log = ResultLog("loop")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for kind in ("step", "loop") if i % 2 == 0 else ("loop", "step"):
                row = {"round": i, "kind": kind, "recipe": args.recipe, "batch_size": args.batch_size}
                row.update(precision=args.precision, sets=args.set, threads=os.cpu_count())
                if kind == "step":
                    steps = args.step_steps or args.epochs * (args.images // args.batch_size)
                    row.update(
                        step_rates(args.recipe, args.batch_size, args.precision, steps, args.set, args.images)
                    )
                else:
                    row.update(loop_rates(args.recipe, opts, Path(tmp) / f"run-{i}"))
                log.add(row)
    steps = [r["median_window"] for r in log.rows if r["kind"] == "step"]
    loops = [r for r in log.rows if r["kind"] == "loop"]
    summary = {
        "step_median": statistics.median(steps),
        "loop_median_logged": statistics.median(r["median_logged"] for r in loops),
        "loop_whole_run_median": statistics.median(r["whole_run"] for r in loops),
    }
    summary["logged_vs_step"] = round(summary["loop_median_logged"] / summary["step_median"], 3)
    summary["whole_run_vs_step"] = round(summary["loop_whole_run_median"] / summary["step_median"], 3)
    print(json.dumps(summary))
    log.write(summary=summary)


if __name__ == "__main__":
    main()
