"""Render the documentation's results page from the result files (`results/*.json`): every number on
it comes from a file written by a benchmark, with the machine, the command and the date it names.

    python benchmarks/render_results.py            # writes docs/benchmarks/results.md
    python benchmarks/render_results.py --check    # exit 1 if the committed page differs (CI)

The speed benchmark (`run_all.py`) is shown per machine kind from its newest complete run (with any
newer partial runs above it; older runs stay in `results/`); every run of each quality benchmark is
shown, newest first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import conditional_classes  # noqa: E402
import run_all  # noqa: E402
import small_data  # noqa: E402

RESULTS = HERE / "results"
PAGE = HERE.parent / "docs" / "benchmarks" / "results.md"

INTRO = """# Results

Rendered by `python benchmarks/render_results.py` from the JSON files in `benchmarks/results/`; CI
checks that this page is what the script renders, so no figure here is typed by hand. Each section
names its machine (CPU model and vector extensions, threads, torch), its command and its date. How
each benchmark measures: [How we measure](index.md).
"""


def _machine_kind(m: dict) -> str:
    feats = "-".join(k for k, v in (m.get("cpu_features") or {}).items() if v)
    return f"{m.get('cpu', '?')} {m.get('cpu_kind', '').split(' ')[0]} {feats}".strip()


def _stamp(path: Path) -> str:
    return path.stem[:15]  # YYYY-MM-DD-HHMM


def load() -> dict[str, list[tuple[Path, dict]]]:
    """The result files by kind (speed, small-data, classes of a conditional generator), newest first."""
    kinds: dict[str, list[tuple[Path, dict]]] = {
        "speed": [],
        "against": [],
        "small-data": [],
        "classes": [],
        "rows": [],
    }
    for path in sorted(RESULTS.glob("*.json"), reverse=True):
        data = json.loads(path.read_text())
        if "benchmark" in data and "rows" in data:  # written by common.ResultLog
            kinds["rows"].append((path, data))
        elif "train" in data and "attacks" in data:  # run_all.py; with --against: a before/after run
            kinds["against" if data.get("against") else "speed"].append((path, data))
        elif path.stem.endswith("small-data"):
            kinds["small-data"].append((path, data))
        elif path.stem.endswith("-classes"):  # conditional_classes.py: <stamp>-<recipe>-classes
            kinds["classes"].append((path, data))
    return kinds


def _demote(markdown: str) -> str:
    """A benchmark's own Markdown under this page's headings: its title becomes a level-3 heading."""
    return "\n".join(("###" + line[1:]) if line.startswith("# ") else line for line in markdown.splitlines())


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))[:120].replace("|", "/")
    return str(value).replace("|", "/")


def rows_table(data: dict) -> str:
    """A ResultLog file as a table: one row per measurement, a column per key."""
    columns: list[str] = []
    for row in data["rows"]:
        columns += [k for k in row if k not in columns]
    m = data["machine"]
    lines = [
        f"Machine: {_machine_kind(m)}, {m.get('threads')} threads, torch {m.get('torch')}, "
        f"{m.get('device')}.",
        f"Command: `{data.get('command', '?')}`",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in data["rows"]]
    return "\n".join(lines) + "\n"


def render() -> str:
    kinds = load()
    out = [INTRO]
    out += [
        "## Speed: every recipe and attack beside its baseline",
        "",
        "`run_all.py`: images/s of each recipe's training step at the seed's batch sizes, gankit "
        "against the seed's TensorFlow code, and attacks against torchattacks, in interleaved rounds on "
        "one machine. The newest run of each machine kind:",
        "",
    ]
    complete = {(r, b) for r, b, *_ in run_all.TRAIN}
    done = set()  # machine kinds whose newest complete run is shown (newer partial runs shown above it)
    for path, data in kinds["speed"]:
        kind = _machine_kind(data["machine"])
        if kind in done:
            continue
        if complete <= {(row["recipe"], row["batch"]) for row in data["train"]}:
            done.add(kind)
        out += [f"### {kind}, {data['machine']['date']}", "", f"File: `benchmarks/results/{path.name}`", ""]
        out += [run_all.table(data), ""]
    if kinds["against"]:
        out += [
            "## Speed before and after a change",
            "",
            "`run_all.py --against TREE`: the same workloads from another checkout (the commit before a "
            "change), interleaved in each round on one machine. Every run, newest first:",
            "",
        ]
    for path, data in kinds["against"]:
        out += [f"### {_machine_kind(data['machine'])}, {data['machine']['date']}", ""]
        out += [f"File: `benchmarks/results/{path.name}`", "", run_all.table(data), ""]
    for title, kind, markdown in (
        ("Augmentation on small data", "small-data", small_data.markdown),
        (
            "Conditional generators: is the requested class what comes out?",
            "classes",
            conditional_classes.markdown,
        ),
    ):
        out += [f"## {title}", ""]
        for path, data in kinds[kind]:
            out += [_demote(markdown(data, _stamp(path))), f"File: `benchmarks/results/{path.name}`", ""]
    by_name: dict[str, list[tuple[Path, dict]]] = {}
    for path, data in kinds["rows"]:
        by_name.setdefault(data["benchmark"], []).append((path, data))
    if by_name:
        out += ["## Other benchmarks", ""]
    for name, files in sorted(by_name.items()):
        for path, data in files:
            out += [f"### {name}, {data['machine'].get('date', _stamp(path))}", "", rows_table(data)]
            out += [f"File: `benchmarks/results/{path.name}`", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed page instead")
    args = parser.parse_args()
    page = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print(
                f"{PAGE} is not what benchmarks/render_results.py renders: run it and commit", file=sys.stderr
            )
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
