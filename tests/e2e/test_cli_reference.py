"""docs/cli.md's option tables are the parsers' own: a flag added, renamed or given another
default without `make docs-tables` fails here."""

import argparse

import cli_reference


def test_cli_md_option_tables_match_the_parsers():
    doc = cli_reference.ROOT / "docs" / "cli.md"
    assert cli_reference.committed(doc) == cli_reference.render(), (
        "docs/cli.md's option tables differ from the parsers; run make docs-tables"
    )


def test_every_console_script_and_subcommand_has_a_table():
    progs = [parser.prog for parser in cli_reference.parsers()]
    for command in cli_reference.scripts():
        assert command in progs, command
    for sub in ("caption-data synth", "caption-train evaluate", "caption-train scst",
                "caption-bench merge", "caption-bench render", "edge_caption info"):  # fmt: skip
        assert sub in progs, sub


def test_a_table_shows_flags_values_defaults_and_help():
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("bundles", nargs="+", help="bundle folders")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--beam", type=int, default=3, help="beam width (default %(default)s)")
    parser.add_argument("--mode", choices=["a", "b"], default="a", help="a | b")
    parser.add_argument("--fast", action="store_true", help="go fast")
    assert cli_reference.options_table(parser).splitlines() == [
        "| option | value | default | what it does |",
        "|---|---|---|---|",
        "| `bundles` | one or more |  | bundle folders |",
        "| `--out` (required) | OUT |  | output folder |",
        "| `--beam` | BEAM | `3` | beam width (default 3) |",
        "| `--mode` | {a,b} | `a` | a \\| b |",
        "| `--fast` |  |  | go fast |",
    ]


def test_check_fails_on_a_doc_that_drifted(tmp_path, capsys):
    doc = tmp_path / "cli.md"
    doc.write_text("# x\n<!-- BEGIN options -->\nstale\n<!-- END options -->\n")
    assert cli_reference.main(["check", "--into", str(doc)]) == 1
    assert "differ from the parsers" in capsys.readouterr().out
    assert cli_reference.main(["render", "--into", str(doc)]) == 0
    assert cli_reference.main(["check", "--into", str(doc)]) == 0
