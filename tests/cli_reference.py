"""docs/cli.md's option tables, made from the console scripts' own argparse parsers.

    python tests/cli_reference.py render --into docs/cli.md     (make docs-tables)
    python tests/cli_reference.py check --into docs/cli.md      (exit 1 when they differ)

Every command of pyproject.toml's [project.scripts] and each of its subcommands gets a
table between the lines <!-- BEGIN options --> and <!-- END options -->;
tests/e2e/test_cli_reference.py fails when the committed tables differ from the parsers.

A command builds its parser inside main() (several build one per subcommand there), so
each parser is caught where main() hands it its arguments: ArgumentParser.parse_args is
replaced for the call by one that raises with the parser. Nothing after it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import tomllib

from edgecap.benchmarks.render import replace_between_markers
from edgecap.benchmarks.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
MARKER = "options"
# Subcommands that main() picks off by hand before its own parser (argparse subparsers
# are found by themselves); caption-train lists its own in cli_train.SUBCOMMANDS.
HAND_DISPATCHED = {
    "edge_caption": ["info", "models"],
    "caption-bench": ["merge", "render"],
}


class _Caught(BaseException):  # not an Exception: a main() that catches those lets it through
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def scripts() -> dict[str, str]:
    """[project.scripts]: command -> 'module:function'."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def caught_parser(main: Callable[[list[str]], int], argv: list[str]) -> argparse.ArgumentParser:
    """The parser that main(argv) parses its arguments with."""

    def catch(parser: argparse.ArgumentParser, *args, **kwargs):
        raise _Caught(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch):
        try:
            main(argv)
        except _Caught as caught:
            return caught.parser
    raise RuntimeError(f"{main.__module__}.main({argv}) parsed no arguments")


def parsers() -> list[argparse.ArgumentParser]:
    """Every command's parser and its subcommands', in [project.scripts] order."""
    found = []
    for command, target in scripts().items():
        module_name, function = target.split(":")
        module = importlib.import_module(module_name)
        main = getattr(module, function)
        words = HAND_DISPATCHED.get(command, list(getattr(module, "SUBCOMMANDS", {})))
        for argv in ([], *([word] for word in words)):
            parser = caught_parser(main, argv)
            found.append(parser)
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    found += list(dict.fromkeys(action.choices.values()))
    return found


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(map(str, action.choices)) + "}"
    if not action.option_strings:  # a positional: its name is in the first column
        return {"?": "optional", "*": "any number", "+": "one or more"}.get(action.nargs, "")
    name = action.metavar or action.dest.upper()
    return {"?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [...]"}.get(action.nargs, name)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return ""
    return f"`{action.default}`"


def options_table(parser: argparse.ArgumentParser) -> str:
    """One row per argument of `parser`: its flags (or name), value, default and help."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            names = ", ".join(f"`{name}`" for name in action.choices)
            rows.append([f"subcommand: {names}", "", "", "see below"])
            continue
        flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        if action.required and action.option_strings:
            flags += " (required)"
        # "<unk>" and the like would read as HTML tags
        help_text = formatter._expand_help(action).replace("<", "\\<") if action.help else ""
        rows.append([flags, _argument(action), _default(action), help_text])
    return markdown_table(["option", "value", "default", "what it does"], rows, text_columns=4)


def render() -> str:
    """The Markdown between the markers: a heading, the description and a table per parser."""
    parts = []
    for parser in parsers():
        parts += [f"### `{parser.prog}`", ""]
        if parser.description:
            parts += [parser.description, ""]
        parts += [options_table(parser), ""]
    return "\n".join(parts).rstrip("\n")


def committed(doc: Path) -> str:
    """What stands between the markers of `doc` now."""
    text = doc.read_text(encoding="utf-8")
    begin, end = f"<!-- BEGIN {MARKER} -->\n", f"\n<!-- END {MARKER} -->"
    return text.split(begin, 1)[1].split(end, 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/cli_reference.py", description=__doc__)
    parser.add_argument("action", choices=["render", "check"])
    parser.add_argument("--into", type=Path, default=ROOT / "docs" / "cli.md")
    args = parser.parse_args(argv)
    tables = render()
    if args.action == "render":
        replace_between_markers(args.into, MARKER, tables)
        print(f"wrote the {MARKER} tables into {args.into}")
        return 0
    if committed(args.into) != tables:
        print(f"{args.into}: the option tables differ from the parsers; run make docs-tables")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
