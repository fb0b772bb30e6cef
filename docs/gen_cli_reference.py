"""Writes reference/cli.md at build time from gankit's argparse parser: the one source of the CLI's
options and help texts (run by the mkdocs-gen-files plugin; nothing generated is committed)."""

from __future__ import annotations

import argparse

import mkdocs_gen_files

from gankit.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _section(lines: list[str], name: str, parser: argparse.ArgumentParser, level: int) -> None:
    lines += [f"{'#' * level} `{name}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```text", parser.format_help().rstrip(), "```", ""]
    for sub, child in _subparsers(parser).items():
        _section(lines, f"{name} {sub}", child, min(level + 1, 4))


def main() -> None:
    parser = build_parser()
    parser.prog = "gankit"
    lines = [
        "# Command line",
        "",
        "Generated from the parser at build time (`gankit COMMAND --help` prints the same). Every option",
        "of `gankit train RECIPE` is a field of the recipe's config; see each guide for what it does.",
        "",
    ]
    for name, sub in _subparsers(parser).items():
        _section(lines, f"gankit {name}", sub, 2)
    with mkdocs_gen_files.open("reference/cli.md", "w") as f:
        f.write("\n".join(lines) + "\n")


main()
