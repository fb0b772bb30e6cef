"""The documentation is part of the product: every `gankit ...` command shown in README.md and docs/
names a real subcommand and real options (a renamed flag fails here), the cheap ones marked
`<!-- runs-in-tests -->` are run, the results page is what its script renders from the result files,
and the site builds with `mkdocs build --strict` (no warning, no broken link)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gankit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```([a-z]*)[^\n]*\n(.*?)^```", re.M | re.S)
RUNS_IN_TESTS = "<!-- runs-in-tests -->"


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, start offset) of each fenced block."""
    return [(m.group(1), m.group(2), m.start()) for m in FENCE.finditer(text)]


def _commands(body: str) -> list[list[str]]:
    """The gankit invocations in a shell block, as argument lists (after `gankit`), one per command:
    continuation lines joined, comments dropped, `&&`, `;` and `|` split, `torchrun ... -m gankit`
    and leading VAR=value assignments understood."""
    text = body.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if (
            not line
            or line.startswith(("#", "->", "$ python", "python"))
            and "gankit" not in line.split()[:3]
        ):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token in ("&&", ";", "|", "||"):
                if segment:
                    found.append(segment)
                segment = []
            else:
                segment.append(token)
    out = []
    for seg in found:
        while seg and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", seg[0]):
            seg = seg[1:]
        if seg[:1] == ["gankit"]:
            out.append(seg[1:])
        elif (
            seg[:1] == ["torchrun"]
            and "-m" in seg
            and seg[seg.index("-m") + 1 : seg.index("-m") + 2] == ["gankit"]
        ):
            out.append(seg[seg.index("-m") + 2 :])
    return out


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every gankit command in a shell block of README.md or docs/."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for lang, body, start in _blocks(text):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            line = text.count("\n", 0, start) + 1
            for args in _commands(body):
                found.append((f"{page.relative_to(ROOT)}:{line}", args))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(*parsers: argparse.ArgumentParser) -> set[str]:
    return {s for p in parsers for a in p._actions for s in a.option_strings}


def check_command(args: list[str]) -> str | None:
    """Why `gankit ARGS` is not a real command (unknown subcommand, recipe or option), or None."""
    top = build_parser()
    commands = _subparsers(top)
    if not args or args[0] in ("--version", "-h", "--help"):
        return None
    if args[0] not in commands:
        return f"unknown subcommand {args[0]!r}"
    parsers = [commands[args[0]]]
    rest = args[1:]
    recipes = _subparsers(parsers[0])
    if recipes:  # gankit train RECIPE ...
        first = next((t for t in rest if not t.startswith("-")), None)
        if first is not None and first not in recipes and "--resume" not in rest and "..." not in first:
            return f"unknown recipe {first!r}"
        if first in recipes:
            parsers.append(recipes[first])
    known = _options(*parsers)
    for token in rest:
        if token.startswith("--") and len(token) > 2:
            name = token.split("=", 1)[0]
            if name not in known:
                return f"unknown option {name} for gankit {args[0]}"
    return None


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    assert len(COMMANDS) > 40 and any(a[0] == "serve" for _, a in COMMANDS)


@pytest.mark.parametrize("where,args", COMMANDS, ids=[f"{w} {' '.join(a[:2])}" for w, a in COMMANDS])
def test_every_documented_command_is_real(where, args):
    problem = check_command(args)
    assert problem is None, f"{where}: gankit {' '.join(args)}: {problem}"


def test_a_renamed_flag_is_caught():
    assert check_command(["train", "dcgan", "--epochs", "3"]) is None
    assert check_command(["train", "dcgan", "--epoch", "3"]) == "unknown option --epoch for gankit train"
    assert check_command(["sample", "runs/x", "--seeds", "1"]) == "unknown option --seeds for gankit sample"
    assert check_command(["trian", "dcgan"]) == "unknown subcommand 'trian'"
    assert check_command(["train", "dcgann"]) == "unknown recipe 'dcgann'"


def test_the_cheap_documented_commands_run(tmp_path, capsys):
    """The blocks marked runs-in-tests, in order, in one folder, as a user would type them."""
    ran = 0
    for page in PAGES:
        text = page.read_text()
        for _lang, body, start in _blocks(text):
            if RUNS_IN_TESTS not in text[max(0, start - 200) : start]:
                continue
            for args in _commands(body):
                code = main(args)
                out = capsys.readouterr()
                assert code == 0, f"{page.name}: gankit {' '.join(args)} exited {code}: {out.err}"
                ran += 1
    assert ran >= 3


def test_the_results_page_is_what_the_result_files_render():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import render_results
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert render_results.PAGE.read_text() == render_results.render(), (
        "docs/benchmarks/results.md is stale: run python benchmarks/render_results.py and commit"
    )


def test_the_site_builds_strict(tmp_path):
    if shutil.which("mkdocs") is None and not os.environ.get("CI"):
        pytest.skip("needs the docs extra: pip install -e '.[docs]'")
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--max-upload-mb" in cli and "--diffaugment" in cli  # generated from the parser
