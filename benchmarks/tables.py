"""The one Markdown table writer of caption-bench, its reports and `make docs-tables`.

Not `tabulate`: every cell here is formatted by its own rule (units, "—" for a missing
figure, "×" ratios, bold), which a table library does not remove; what is left to share is
the header, the alignment row and the escaping, and tabulate's column padding would make
every regenerated README table differ in whitespace from the last one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], text_columns: int = 1
) -> str:
    """A GitHub Markdown table: the first `text_columns` columns left-aligned, the rest
    (the figures) right-aligned; every row padded to the header's width."""
    width = len(header)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * text_columns + "---:|" * (width - text_columns),
    ]
    for row in rows:
        # each value as one cell: '|' escaped, line breaks flattened
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        cells += [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
