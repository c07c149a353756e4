"""`caption-bench render KIND FILE... --into DOC`: the table of KIND made from result files,
put into DOC between the lines <!-- BEGIN marker --> and <!-- END marker --> (make docs-tables).

    caption-bench render demo artifacts/demo/report.json --into README.md
    caption-bench render flickr8k docs/results/flickr8k.json --into README.md
    caption-bench render inputs INPUTS.json... --into docs/benchmarks.md
    caption-bench render inputs-before-after INPUTS.json... --into README.md --marker inputs
    caption-bench render training-memory training-memory.json --into README.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecap.edge_runtime.atomic import write_text_atomic

from .demo import demo_table
from .input_kinds import before_after_table, inputs_report
from .results import evaluation_markdown
from .tables import markdown_table


@dataclass(frozen=True)
class TableKind:
    marker: str  # the default marker of DOC
    reading: str  # what a FILE is, for the error when it cannot be read
    made_by: str  # what writes a FILE
    table: Callable[[list[dict]], str]  # the parsed FILEs -> the Markdown


def training_memory_table(rows: list[dict]) -> str:
    """The README's table of export/studies/training_memory.py: the cases that finished."""
    header = ["case", "training captions", "peak RSS", "seconds"]
    body = [[r["case"], f"{r['captions']:,}", f"{r['peak_rss_gb']:.2f} GB", f"{r['seconds']:.0f}"]
            for r in rows if r["exit_code"] == 0]  # fmt: skip
    return markdown_table(header, body)


TABLES = {
    "demo": TableKind("demo", "the demo report", "make demo", lambda files: demo_table(files[0])),
    "flickr8k": TableKind(
        "flickr8k",
        "the Flickr8k record",
        "make flickr8k",
        lambda files: evaluation_markdown(files[0]["rows"]),
    ),
    "inputs": TableKind(
        "inputs",
        "the inputs results",
        "caption-bench inputs",
        lambda files: "\n".join(inputs_report(result) for result in files),
    ),
    "inputs-before-after": TableKind(
        "inputs", "the inputs results", "caption-bench inputs", before_after_table
    ),
    "training-memory": TableKind(
        "training-memory",
        "the training-memory results",
        "make bench-training",
        lambda files: training_memory_table(files[0]["rows"]),
    ),  # fmt: skip
}


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
        replace_between_markers(args.into, marker, kind.table(files))
    except ValueError as exc:
        raise SystemExit(f"caption-bench render: {exc}") from None
    print(f"wrote the {marker} table into {args.into}")
    return 0
