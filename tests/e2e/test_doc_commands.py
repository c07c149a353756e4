"""Every command the README and docs show is one the tools accept, as written.

Each command line of a fenced code block (`caption-train --data D ...`) is parsed by the
real argument parser of its console script, reached through the script's own `main` (so
subcommand dispatch is the real one too); nothing runs. Commands quoted in running text
(`caption-train evaluate RUN --data D --split dev`) are parsed the same way, and a
fragment that names a command and options (`edge_caption --beam 3`) must at least name
options that command has. A flag that is renamed or removed, or a required one that a
documented command lacks, fails here. The studies' scripts (`python
export/studies/NAME.py ...`, run from the checkout) are checked the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecap.benchmarks.bench import main as bench_main
from edgecap.edge_runtime.cli import main as edge_caption_main
from edgecap.export.cli import main as export_main
from edgecap.train.cli_data import main as data_main
from edgecap.train.cli_train import main as train_main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS: dict[str, Callable] = {
    "caption-data": data_main,
    "caption-train": train_main,
    "caption-export": export_main,
    "edge_caption": edge_caption_main,
    "caption-bench": bench_main,
}
CONSOLE_SCRIPTS = set(SCRIPTS)


def _study_main(path: Path) -> Callable:
    """A study's main, loaded from its script when called (studies are not installed)."""

    def main(argv: list[str]) -> int:
        spec = importlib.util.spec_from_file_location(f"doc_study_{path.stem}", path)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(argv)

    return main


STUDIES = sorted((REPO / "export" / "studies").glob("*.py"))
SCRIPTS.update({f"export/studies/{path.name}": _study_main(path) for path in STUDIES})
# Shell syntax that ends the command's own arguments.
ENDS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}
FENCE = re.compile(r"^\s*```")
SPAN = re.compile(r"`([^`]+)`")


def _words(text: str) -> list[str] | None:
    """The script's name and arguments of a shell line, or None if it runs no script."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: prose, not a command
        return None
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value cmd
        words = words[1:]
    if not words:
        return None
    if words[0].rsplit("/", 1)[-1] in ("python", "python3") and len(words) > 1:
        words = words[1:]  # python export/studies/NAME.py: the script is the command
    else:
        words[0] = words[0].rsplit("/", 1)[-1]  # .venv/bin/caption-train
    if words[0] not in SCRIPTS:
        return None
    for i, word in enumerate(words):
        if word in ENDS or word.startswith((">", "2>")):
            return words[:i]
    return words


def _block_commands(path: Path) -> list[tuple[str, list[str]]]:
    found, inside, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):  # a continued line
            pending += line.rstrip()[:-1] + " "
            continue
        words = _words(pending + line)
        pending = ""
        if words:
            found.append((f"{path.name}:{start}", words))
    return found


def _span_commands(path: Path) -> list[tuple[str, list[str]]]:
    """Code spans of running text that start with a script's name; a span may wrap."""
    text, found = path.read_text(encoding="utf-8"), []
    outside_blocks = re.sub(r"```.*?```", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    for match in SPAN.finditer(outside_blocks):
        words = _words(" ".join(match.group(1).split()))
        if words:
            line = outside_blocks.count("\n", 0, match.start()) + 1
            found.append((f"{path.name}:{line}", words))
    return found


BLOCKS = [c for path in DOCS for c in _block_commands(path)]
SPANS = [c for path in DOCS for c in _span_commands(path)]


class _Reached(Exception):
    """Raised in place of parsing: the parser a script's main was about to use."""

    def __init__(self, parser: argparse.ArgumentParser, args: list[str]):
        self.parser, self.arguments = parser, args


def _parser_of(words: list[str], monkeypatch) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser `main` hands these arguments to, and the arguments it hands over (a
    subcommand word picked off by main is gone from them)."""

    def reached(self, args=None, namespace=None):
        raise _Reached(self, list(args))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", reached)
        try:
            SCRIPTS[words[0]](words[1:])
        except _Reached as stop:
            return stop.parser, stop.arguments
    raise AssertionError(f"{' '.join(words)}: main returned without parsing its arguments")


def _subparser(parser: argparse.ArgumentParser, args: list[str]):
    """(parser, args) one level down where the first argument names a subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and args and args[0] in action.choices:
            return _subparser(action.choices[args[0]], args[1:])
    return parser, args


def _exact(parser: argparse.ArgumentParser) -> None:
    """No abbreviations: `--max-fps` must not pass as the prefix of a renamed option."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _exact(sub)


def _parse(words: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, argparse's message): 0 where the real parser accepts the arguments.
    A capital placeholder for a number (`--beam K`) stands for one."""
    parser, args = _parser_of(words, monkeypatch)
    deepest, _ = _subparser(parser, args)
    for i, word in enumerate(args[1:], 1):
        action = deepest._option_string_actions.get(args[i - 1])
        if action is not None and action.type in (int, float) and re.fullmatch(r"[A-Z]+", word):
            args[i] = "1"
    _exact(parser)
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err.strip()
    return 0, ""


def test_the_docs_show_commands_of_every_script():
    # The extraction itself works: each script appears in a code block.
    assert {words[0] for _, words in BLOCKS} >= CONSOLE_SCRIPTS
    assert any(words[0].startswith("export/studies/") for _, words in BLOCKS)
    assert len(BLOCKS) > 30 and SPANS


@pytest.mark.parametrize(("where", "words"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_every_command_in_a_code_block_parses(where, words, monkeypatch, capsys):
    code, message = _parse(words, monkeypatch, capsys)
    assert code == 0, f"{where}: {shlex.join(words)}\n{message}"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _positionals(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """The arguments that are neither options nor an option's value."""
    found, i = [], 0
    while i < len(args):
        word = args[i]
        action = parser._option_string_actions.get(word)
        if action is not None and action.nargs != 0:
            i += 2  # --flag VALUE
            continue
        if not word.startswith("-"):
            found.append(word)
        i += 1
    return found


@pytest.mark.parametrize(("where", "words"), SPANS, ids=[w for w, _ in SPANS])
def test_every_command_quoted_in_text_names_real_options(where, words, monkeypatch, capsys):
    parser, args = _subparser(*_parser_of(words, monkeypatch))
    flags = {w.split("=")[0] for w in args if w.startswith("--")}
    unknown = sorted(flags - _options(parser))
    assert not unknown, f"{where}: `{shlex.join(words)}`: {parser.prog} has no {unknown}"
    # A span with a positional argument (a run, a bundle) reads as a whole command: it must
    # parse, required options included. Options alone, or with `...` for what is left
    # out, name them and say nothing more.
    if _positionals(parser, args) and "..." not in args:
        code, message = _parse(words, monkeypatch, capsys)
        assert code == 0, f"{where}: `{shlex.join(words)}`\n{message}"


def test_a_documented_flag_that_disappears_fails(monkeypatch, capsys):
    """What the tests above catch: here `--every` is taken out of edge_caption's parser."""
    from edgecap.edge_runtime import cli

    real = cli._parser

    def without_every() -> argparse.ArgumentParser:
        parser = real()
        (action,) = [a for a in parser._actions if "--every" in a.option_strings]
        parser._remove_action(action)
        for option in action.option_strings:
            del parser._option_string_actions[option]
        return parser

    monkeypatch.setattr(cli, "_parser", without_every)
    documented = [w for _, w in BLOCKS if w[0] == "edge_caption" and "--every" in w]
    assert documented
    code, message = _parse(documented[0], monkeypatch, capsys)
    assert code == 2 and "unrecognized arguments: --every" in message
