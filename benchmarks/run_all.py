"""The whole speed benchmark in one command: every recipe at the seed's batch sizes in fp32 and at the
default precision, the seed's TensorFlow steps beside them, FGSM and PGD against torchattacks, and a
profile of each recipe's step (the operators its time goes to, and its roofline: the step's multiply-adds
as direct convolution against this machine's measured matrix-product peak). Writes JSON and a Markdown
table that name the machine: CPU model, its vector extensions (AVX-512, AVX512-BF16, AMX), threads, torch.

    python benchmarks/run_all.py --out benchmarks/results --tf-python /tmp/tfenv/bin/python \
        --torchattacks /tmp/ta --rounds 2

Each measurement runs in its own process (bench_train.py / bench_attacks.py / the baselines); rounds
interleave gankit and its baseline so that drift of a shared machine hits both. A baseline whose
framework is missing is reported as skipped, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402  (this folder)

# (recipe, batch, seed baseline script and its arguments, steps for gankit)
TRAIN = [
    ("dcgan", 64, ["seed_dcgan_tf.py", "64"], 20),
    ("dcgan", 512, ["seed_dcgan_tf.py", "512"], 10),
    ("ssgan", 100, ["seed_ssgan_tf.py", "30"], 20),
    ("pix2pix", 1, ["seed_pix2pix_tf.py", "1", "10"], 8),
    ("cyclegan", 1, ["seed_cyclegan_tf.py", "1", "4"], 4),
]
ATTACKS = [("fgsm", 1), ("fgsm", 32), ("pgd", 1), ("pgd", 32)]
# the convolution paths of gankit.cpu (settings.PATHS), all off for the direct-convolution multiply-adds
CONV_PATHS = ("frequency_conv", "winograd", "gemm_wgrad", "small_map", "small_map_wide", "narrow_conv")


def _tree(tree: str | None) -> tuple[Path, dict]:
    """The benchmarks folder to run and the environment that imports that tree's gankit: this checkout's,
    or (`--against TREE`) another checkout's, e.g. a worktree of the commit before a change."""
    if tree is None:
        return HERE, {}
    src = str(Path(tree).resolve() / "src")
    return Path(tree).resolve() / "benchmarks", {
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    }


def run_json(cmd: list[str], env: dict | None = None) -> dict | None:
    env = {**os.environ, "GANKIT_BENCH_NO_SAVE": "1", **(env or {})}  # this run writes the one file
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(
            f"  failed: {' '.join(cmd[1:4])}: {(p.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr
        )
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def gankit_train(
    recipe: str, batch: int, precision: str, steps: int, tree: str | None = None
) -> float | None:
    bench, env = _tree(tree)
    cmd = [
        sys.executable,
        str(bench / "bench_train.py"),
        "--one",
        "--recipe",
        recipe,
        "--batch-size",
        str(batch),
    ]
    cmd += ["--loader", "memory", "--precision", precision, "--steps", str(steps), "--warmup", "2"]
    r = run_json(cmd, env)
    return r["images_per_s"] if r else None


def seed_tf(tf_python: str | None, args: list[str]) -> float | None:
    if not tf_python:
        return None
    env = {"TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run(
        [tf_python, str(HERE / "baselines" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    m = re.search(r"img/s ([0-9.]+)", p.stdout)
    if not m:
        print(f"  seed TF {args}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
    return float(m.group(1)) if m else None


def attack(impl: str, name: str, batch: int, ta_path: str | None, tree: str | None = None) -> float | None:
    if impl == "torchattacks" and not ta_path:
        return None
    bench, env = _tree(tree)
    cmd = [sys.executable, str(bench / "bench_attacks.py"), "--one", "--impl", impl, "--attack", name]
    cmd += ["--batch-size", str(batch), "--repeats", "3" if batch > 1 else "20"]
    path = env.get("PYTHONPATH", os.environ.get("PYTHONPATH"))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [ta_path, path]))}
    r = run_json(cmd, env)
    return r["images_per_s"] if r else None


def profile(recipe: str, batch: int, precision: str, top: int = 6) -> list[dict]:
    """The operators the recipe's training steps spend their time in (`bench_train.OperatorTimer`: wall
    time per operator, each share of all operators' time; set-up and warm-up steps excluded)."""
    out = _in_bench_process(
        f"""
import json
timer = bench_train.OperatorTimer()
bench_train.measure({recipe!r}, {batch}, "memory", {precision!r}, 3, 2, "auto", around=lambda: timer)
total = sum(timer.seconds.values())
rows = timer.seconds.most_common({top})
print(json.dumps([{{"op": op, "share": round(t / total, 3)}} for op, t in rows]))
"""
    )
    return json.loads(out) if out else []


def _in_bench_process(body: str, env: dict | None = None) -> str | None:
    """The last line `body` prints, run in a fresh Python with `bench_train` imported (None if it fails)."""
    code = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport bench_train\n{body}"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None


def step_macs(recipe: str, batch: int) -> float | None:
    """Multiply-adds of one fp32 training step (torch.utils.flop_counter, matrix products and
    convolutions), every layer as a direct convolution (every convolution path of `gankit.cpu` off): the
    work a framework without fast convolution algorithms does."""
    out = _in_bench_process(
        f"""
from torch.utils.flop_counter import FlopCounterMode
fc = FlopCounterMode(display=False)
bench_train.measure({recipe!r}, {batch}, "memory", "fp32", 1, 1, "auto", around=lambda: fc)
print(fc.get_total_flops() / 2)
""",
        env=dict(os.environ, **{f"GANKIT_CPU_{p.upper()}": "off" for p in CONV_PATHS}),
    )
    return float(out) if out else None


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """The fp32 matrix-product rate in GMAC/s of the device the benchmark runs on (best of `repeats`
    n x n x n products): the ceiling a step made of direct convolutions can approach."""
    import torch

    from gankit.cpu import keep_freed_host_memory
    from gankit.cpu.machine import best_time
    from gankit.device import pick_device

    dev = pick_device("auto")
    if dev.type == "cpu":
        keep_freed_host_memory()
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    return n**3 / best_time(lambda: torch.mm(a, b), dev, repeats) / 1e9


def roofline(row: dict, macs: float | None, peak: float) -> str:
    """'X GMAC/step; best round: fp32 Y GMAC/s (Z% of the peak), seed TF ...' for one recipe row."""
    if not macs:
        return ""
    gmacs = {  # images/s of the best round x multiply-adds per image
        name: max(v for v in row[k] if v) * macs / row["batch"] / 1e9
        for k, name in (("fp32", "gankit fp32"), ("seed_tf", "seed TF"))
        if any(row[k])
    }
    shown = [f"{name} {g:.1f} GMAC/s ({100 * g / peak:.0f}%)" for name, g in gmacs.items()]
    return f"{macs / 1e9:.1f} GMAC/step as direct convolution; best round: {', '.join(shown)}"


def span(values: list[float | None]) -> str:
    v = [x for x in values if x]
    if not v:
        return "-"
    lo, hi = min(v), max(v)
    fmt = (lambda x: f"{x:.2f}") if hi < 10 else (lambda x: f"{x:.0f}")
    return fmt(lo) if abs(hi - lo) < 1e-9 else f"{fmt(lo)}-{fmt(hi)}"


def ratio(num: list[float | None], den: list[float | None]) -> str:
    pairs = [(a, b) for a, b in zip(num, den) if a and b]
    if not pairs:
        return ""
    r = [a / b for a, b in pairs]
    return f" ({min(r):.2f}x)" if max(r) - min(r) < 0.005 else f" ({min(r):.2f}-{max(r):.2f}x)"


def table(result: dict) -> str:
    m = result["machine"]
    feats = ", ".join(k for k, v in m["cpu_features"].items() if v) or "none of AVX2/AVX-512/AMX"
    kind = m.get("cpu_kind", "?").split(" ")[0]
    lines = [
        f"Machine: {m['cpu']} (family/model {kind}; {feats}), {m['cores']} cores, {m['threads']} threads, "
        f"torch {m['torch']}, "
        f"{m['device']}; `--precision auto` chose **{m['auto_precision']}** here"
        f"{' (its column is the fp32 run)' if m['auto_precision'] == 'fp32' else ''}. {m['date']}, "
        f"{result['rounds']} interleaved rounds (ranges over rounds; ratios per round vs the baseline).",
        "",
        "| work | seed TF | gankit fp32 | gankit default (auto) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in result["train"]:
        tf, fp32, auto = row["seed_tf"], row["fp32"], row["auto"]
        lines.append(
            f"| {row['recipe']} batch {row['batch']} | {span(tf)} | {span(fp32)}{ratio(fp32, tf)} | "
            f"{span(auto)}{ratio(auto, tf)} |"
        )
    lines += ["", "| attack (EfficientNet-Lite0, 224 px) | torchattacks | gankit |", "| --- | ---: | ---: |"]
    for row in result["attacks"]:
        ta, gk = row["torchattacks"], row["gankit"]
        lines.append(f"| {row['attack']} batch {row['batch']} | {span(ta)} | {span(gk)}{ratio(gk, ta)} |")
    if result.get("against"):
        lines += [
            "",
            f"Against `{result['against']}` (the same workloads from that tree, interleaved in each round; "
            "ratios per round, this tree / that one):",
            "",
            "| work | before | after | |",
            "| --- | ---: | ---: | ---: |",
        ]
        for row in result["train"]:
            for k in ("fp32", "auto"):
                after, before = row[k], row[f"before_{k}"]
                lines.append(
                    f"| {row['recipe']} batch {row['batch']} {k} | {span(before)} | {span(after)} | "
                    f"{ratio(after, before).strip(' ()')} |"
                )
        for row in result["attacks"]:
            after, before = row["gankit"], row["before"]
            lines.append(
                f"| {row['attack']} batch {row['batch']} | {span(before)} | {span(after)} | "
                f"{ratio(after, before).strip(' ()')} |"
            )
    if result.get("macs"):
        peak = m["matmul_peak_gmacs"]
        lines += [
            "",
            f"Roofline: this machine's fp32 matrix product peaks at {peak:.1f} GMAC/s (2048^3 `torch.mm`); "
            "each step's multiply-adds as direct convolution, and the rate that implies (share of the peak; "
            "above 100%: fast convolution algorithms at work):",
            "",
        ]
        for row in result["train"]:
            line = roofline(row, result["macs"].get(f"{row['recipe']} batch {row['batch']}"), peak)
            if line:
                lines.append(f"- {row['recipe']} batch {row['batch']}: {line}")
    if result.get("profiles"):
        title = "Where each recipe's default step spends its time (wall time per operator, top ones):"
        lines += ["", title, ""]
        for name, ops in result["profiles"].items():
            shown = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in ops)
            lines.append(f"- {name}: {shown}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results", help="folder for the JSON and the table")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tf-python", help="a Python with TensorFlow (the seed's baselines); omitted: skipped")
    ap.add_argument("--torchattacks", help="folder holding the torchattacks package; omitted: skipped")
    ap.add_argument("--recipes", nargs="+", default=sorted({r for r, *_ in TRAIN}))
    ap.add_argument("--no-attacks", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--against",
        metavar="TREE",
        help="another checkout (e.g. `git worktree add /tmp/base HEAD~1`): its gankit runs every workload "
        "too, interleaved, its own benchmarks timing it; the table adds before/after ratios",
    )
    args = ap.parse_args()
    result = {"machine": machine(), "rounds": args.rounds, "train": [], "attacks": [], "profiles": {}}
    if args.against:
        commit = subprocess.run(
            ["git", "-C", args.against, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        result["against"] = f"{args.against} at {commit or '?'}"
    result["machine"]["matmul_peak_gmacs"] = round(matmul_peak(), 1)
    print(json.dumps(result["machine"]), flush=True)
    train = [t for t in TRAIN if t[0] in args.recipes]
    rows = {
        (r, b): {
            "recipe": r,
            "batch": b,
            "seed_tf": [],
            "fp32": [],
            "auto": [],
            "before_fp32": [],
            "before_auto": [],
        }
        for r, b, *_ in train
    }
    atk = {
        (a, b): {
            "attack": a if a == "fgsm" else "pgd-10",
            "batch": b,
            "torchattacks": [],
            "gankit": [],
            "before": [],
        }
        for a, b in ([] if args.no_attacks else ATTACKS)
    }
    # where auto means fp32 here, its column is the fp32 run's (the same configuration)
    same = result["machine"]["auto_precision"] == "fp32"
    for rnd in range(args.rounds):
        for recipe, batch, tf_args, steps in train:
            row = rows[(recipe, batch)]
            row["seed_tf"].append(seed_tf(args.tf_python, tf_args))
            # with --against, the two trees alternate which goes first from round to round
            trees = [(None, ""), (args.against, "before_")] if args.against else [(None, "")]
            for tree, key in trees if rnd % 2 == 0 else trees[::-1]:
                row[f"{key}fp32"].append(gankit_train(recipe, batch, "fp32", steps, tree))
                auto = row[f"{key}fp32"][-1] if same else gankit_train(recipe, batch, "auto", steps, tree)
                row[f"{key}auto"].append(auto)
            print(f"round {rnd}: {json.dumps(row)}", flush=True)
        for (name, batch), row in atk.items():
            row["torchattacks"].append(attack("torchattacks", name, batch, args.torchattacks))
            trees = [(None, "gankit"), (args.against, "before")] if args.against else [(None, "gankit")]
            for tree, key in trees if rnd % 2 == 0 else trees[::-1]:
                row[key].append(attack("gankit", name, batch, None, tree))
            print(f"round {rnd}: {json.dumps(row)}", flush=True)
    result["train"], result["attacks"] = list(rows.values()), list(atk.values())
    if not args.no_profile:
        result["macs"] = {f"{r} batch {b}": step_macs(r, b) for r, b, *_ in train}
        for recipe, batch, *_ in train:
            if f"{recipe} batch {batch}" not in result["profiles"] and recipe not in result["profiles"]:
                result["profiles"][f"{recipe} batch {batch}"] = profile(recipe, batch, "auto")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    feats = [k for k, v in result["machine"]["cpu_features"].items() if v]
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", " ".join([result["machine"]["cpu"], *feats[-1:]])).strip("-").lower()
    stem = out / f"{time.strftime('%Y-%m-%d-%H%M')}-{cpu}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(table(result))
    print(table(result))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
