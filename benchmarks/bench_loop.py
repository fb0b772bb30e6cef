"""The training loop users see beside the step the other benchmarks time, interleaved.

`step`: the recipe's `train_step` on the in-memory loader (benchmarks/bench_train.py `measure`, the
same config). `loop`: `gankit train` itself, in its own process, on real data, with the recipe's
default log, preview and checkpoint frequencies (and `--set` overrides, e.g. `ema=0.999`): its median
logged images/s (each log line's rate over its 50 steps; the first line, the warm-up, left out) and its
whole-run rate (every step, preview, checkpoint and log line from the first step to the last
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


def step_rate(recipe: str, batch: int, precision: str, steps: int, sets: list[str]) -> float:
    """Images/s of `steps` train_step calls (after 20 to warm up) in a fresh process."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench_train import measure; "
        "r = measure(sys.argv[2], int(sys.argv[3]), 'memory', sys.argv[4], int(sys.argv[5]), 20, 'cpu', "
        "json.loads(sys.argv[6])); print(json.dumps(r))"
    )
    args = [str(HERE), recipe, str(batch), precision, str(steps), json.dumps(sets)]
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


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
    ap.add_argument("--step-steps", type=int, default=400, help="timed steps of the step benchmark")
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
                    row["images_per_s"] = step_rate(
                        args.recipe, args.batch_size, args.precision, args.step_steps, args.set
                    )
                else:
                    row.update(loop_rates(args.recipe, opts, Path(tmp) / f"run-{i}"))
                log.add(row)
    steps = [r["images_per_s"] for r in log.rows if r["kind"] == "step"]
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
