"""`caption-bench render KIND FILE... --into DOC`: the table of KIND made from result files,
put into DOC between the lines <!-- BEGIN marker --> and <!-- END marker --> (make docs-tables).

    caption-bench render demo artifacts/demo/report.json --into README.md
    caption-bench render flickr8k docs/results/flickr8k.json --into README.md
    caption-bench render inputs INPUTS.json... --into docs/benchmarks.md
    caption-bench render inputs-before-after INPUTS.json... --into README.md --marker inputs
    caption-bench render training-memory training-memory.json --into README.md

Each table is drawn by the module that writes its result files (the demo's report, the
evaluation record, a study), so that a table and its data change together; this module only
finds that function and swaps the table into the document. The studies' tables need the
project's checkout (they are scripts under export/studies/, not installed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecap.edge_runtime.atomic import write_text_atomic


@dataclass(frozen=True)
class TableKind:
    marker: str  # the default marker of DOC
    reading: str  # what a FILE is, for the error when it cannot be read
    made_by: str  # what writes a FILE
    drawn_by: str  # 'package.module:function', or 'studies/FILE.py:function' under export/
    apply: Callable[[Callable, list[dict]], str]  # (that function, the parsed FILEs) -> Markdown


TABLES = {
    "demo": TableKind("demo", "the demo report", "make demo", "edgecap.export.demo:demo_table",
                      lambda draw, files: draw(files[0])),
    "flickr8k": TableKind("flickr8k", "the Flickr8k record", "make flickr8k",
                          "edgecap.train.eval_table:evaluation_markdown",
                          lambda draw, files: draw(files[0]["rows"])),
    "inputs": TableKind("inputs", "the inputs results", "make bench-inputs",
                        "studies/input_kinds.py:inputs_report",
                        lambda draw, files: "\n".join(draw(result) for result in files)),
    "inputs-before-after": TableKind("inputs", "the inputs results", "make bench-inputs",
                                     "studies/input_kinds.py:before_after_table",
                                     lambda draw, files: draw(files)),
    "training-memory": TableKind("training-memory", "the training-memory results",
                                 "make bench-training",
                                 "studies/training_memory.py:training_memory_table",
                                 lambda draw, files: draw(files[0]["rows"])),
}  # fmt: skip


def table_function(drawn_by: str) -> Callable:
    """The function a TableKind names: imported from the package, or loaded from the study
    file of the checkout."""
    where, _, name = drawn_by.partition(":")
    if not where.endswith(".py"):
        return getattr(importlib.import_module(where), name)
    export_folder = importlib.util.find_spec("edgecap.export").submodule_search_locations[0]
    path = Path(export_folder) / where
    if not path.is_file():
        raise SystemExit(
            f"caption-bench render: {path} not found; the studies' tables are drawn by their "
            "scripts in the project's checkout: run it from an editable install (make install)"
        )
    spec = importlib.util.spec_from_file_location(f"edgecap_study_{path.stem}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # for dataclasses
    spec.loader.exec_module(module)
    return getattr(module, name)


def replace_between_markers(path: Path, marker: str, text: str) -> None:
    """Swap what stands between <!-- BEGIN marker --> and <!-- END marker --> in `path`."""
    begin, end = f"<!-- BEGIN {marker} -->", f"<!-- END {marker} -->"
    content = path.read_text(encoding="utf-8")
    if content.count(begin) != 1 or content.count(end) != 1:
        raise ValueError(f"{path}: needs exactly one {begin} line and one {end} line")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    write_text_atomic(path, f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caption-bench render", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kind", choices=TABLES, help="which table")
    parser.add_argument("files", type=Path, nargs="+", help="the result files it is made from")
    parser.add_argument("--into", type=Path, required=True, help="the Markdown file to update")
    parser.add_argument("--marker", help="the marker name in --into (default: the kind's)")
    args = parser.parse_args(argv)
    kind = TABLES[args.kind]
    files = []
    for path in args.files:
        try:
            files.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"{path}: cannot read {kind.reading} ({exc}); run {kind.made_by}"
            ) from None
    marker = args.marker or kind.marker
    try:
        replace_between_markers(args.into, marker, kind.apply(table_function(kind.drawn_by), files))
    except ValueError as exc:
        raise SystemExit(f"caption-bench render: {exc}") from None
    print(f"wrote the {marker} table into {args.into}")
    return 0
