"""One door to the benchmarks: `python -m benchmarks list` names each with what it measures;
`python -m benchmarks run NAME [ARGS...]` runs one (its own `--help` lists its options). Each runs in
its own process, as it would from `python benchmarks/NAME.py`, so one benchmark's imports, threads and
allocator settings never leak into another's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__main__", "__init__", "common", "render_results"}


def benchmarks() -> dict[str, str]:
    """name -> the first line of its docstring, for every script in this folder."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    for path in sorted(HERE.glob("*.sh")):
        lines = [ln.lstrip("# ").strip() for ln in path.read_text().splitlines()[1:4] if ln.startswith("#")]
        found[path.stem] = lines[0] if lines else ""
    return found


def main(argv: list[str]) -> int:
    known = benchmarks()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("list", "run"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "list":
        width = max(map(len, known))
        for name, line in known.items():
            print(f"{name:<{width}}  {line}")
        print(f"{'render_results':<{width}}  (renders docs/benchmarks/results.md from results/*.json)")
        return 0
    if len(argv) < 2 or argv[1] not in known:
        print(f"benchmarks: run NAME: expected one of {', '.join(known)}", file=sys.stderr)
        return 2
    name, rest = argv[1], argv[2:]
    script = HERE / f"{name}.py"
    cmd = (
        [sys.executable, str(script), *rest]
        if script.is_file()
        else ["bash", str(HERE / f"{name}.sh"), *rest]
    )
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
