"""The Raspberry Pi OS matrix (`make test-pi-matrix`): one row per image a user may run,
each measured in an emulated Debian root of the same release and architecture by
tests/platforms/debian_root.sh, and the verdict the docs give it.

    python tests/platforms/matrix.py runs
        the ROOT:EXTRA pairs to run, one per row (the Makefile's list)
    python tests/platforms/matrix.py report RESULT_FOLDER... --record FILE [--out FILE.md]
        each folder's result.json as a row of the record (a row per image and extra; rows
        not rerun are kept), the table printed. Exit status 1 if a folder has no result or
        a row that installed fails its runtime tests
    python tests/platforms/matrix.py render --record FILE --into FILE.md --marker NAME
        the record's table between <!-- BEGIN NAME --> and <!-- END NAME --> (make docs-tables)

Standard library only: it runs on the host's python3 as well as the venv's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date
from pathlib import Path

from edgecap.benchmarks.render import replace_between_markers

# (image, Debian root, extra): what a user runs, and the root that stands for it.
ROWS = [
    ("Raspberry Pi OS 64-bit Bookworm", "debian12-arm64", "edge"),
    ("Raspberry Pi OS 64-bit Bookworm", "debian12-arm64", "pi-legacy"),
    ("Raspberry Pi OS 64-bit Trixie", "debian13-arm64", "edge"),
    ("Raspberry Pi OS 64-bit Bullseye", "debian11-arm64", "edge"),
    ("Raspberry Pi OS 64-bit Bullseye", "debian11-arm64", "pi-legacy"),
    ("Raspberry Pi OS 32-bit Bookworm", "debian12-armhf", "edge"),
    ("Raspberry Pi OS 32-bit Bookworm", "debian12-armhf", "pi-legacy"),
]
IMAGES = {(root, extra): image for image, root, extra in ROWS}
# "works": captions identical to x86's on at least this share of the images, each bundle.
IDENTICAL_FOR_WORKS = 0.95
FLICKR8K_GROUP, CHECK_GROUP = "Flicker8k_Dataset", "imagenet_check"
# Flickr8k test photos at their original size: the only ones the device has to resize
# (the 224 px copy is the encoder's size already), as a user's photos are.
FULL_SIZE_GROUP = "flickr8k-originals"


def _rate(compare: dict | None, name: str = FLICKR8K_GROUP) -> dict | None:
    group = (compare or {}).get("groups", {}).get(name)
    if not group:
        return None
    return {"identical": group["identical"], "images": group["images"]}


def _install_failure(errors: list[str]) -> str:
    """pip's reason, shortened to what a reader needs."""
    text = " ".join(errors)
    python = re.search(r"requires a different Python: (\S+) not in '([^']+)'", text)
    if python:
        return f"Python {python.group(1)} is not {python.group(2)}"
    missing = re.search(r"No matching distribution found for ([^;\s]+)", text)
    own_extra = missing and re.fullmatch(r"edge[-_]caption(\[\w+\])", missing.group(1))
    if own_extra:
        # [edge] asks for edge-caption[core]; an old pip (Debian 11's 20.3) looks that up
        # on the index instead of in the wheel it is installing.
        return (
            f"this pip cannot resolve the wheel's own extra {own_extra.group(1)} "
            "(it looks for edge-caption on the index)"
        )
    if missing:
        return f"no wheel of {missing.group(1)} for this Python and machine"
    return errors[0] if errors else "pip failed (no ERROR line)"


def _wheel_name(result: dict) -> str:
    version = result.get("captions", {}).get("versions", {}).get("edge-caption", "*")
    return f"edge_caption-{version}-py3-none-any.whl"


def _without_sys(record: dict) -> str:
    """The verdict's note on the run with /sys hidden (arm64 rows)."""
    check = record.get("without_sys")
    if not check:
        return ""
    delegates = set((check.get("delegates") or {}).values())
    warned = len(check.get("warnings") or [])
    if check.get("exit_status") == 0 and delegates == {"none"} and warned == 1:
        return "; without /sys: XNNPACK off, one warning line"
    if check.get("exit_status") == 0 and warned == 0 and delegates <= {"xnnpack"}:
        return "; without /sys: XNNPACK still on"
    return f"; without /sys: {warned} warning lines, delegates {sorted(delegates)}"


def row(result: dict) -> dict:
    """One matrix row from a debian_root.sh result.json."""
    facts, install = result["facts"], result["install"]
    key = (result["root"], result["extra"])
    record = {
        "image": IMAGES.get(key, result["root"]),
        "root": result["root"],
        "extra": result["extra"],
        "python": facts["python"],
        "machine": facts["machine"],
        "glibc": facts.get("glibc"),
        "emulated_cpu": facts.get("emulated_cpu"),
        # A venv kept from before install.json recorded it: what in_root.sh ran then.
        "command": install.get("command")
        or f"pip install --only-binary=:all: '{_wheel_name(result)}[{result['extra']}]'",
        "installs": install.get("ok", True),
        "measured": result.get("measured", date.today().isoformat()),
        # where the result came from: this target, or (a row it has not rerun yet) an
        # earlier `make test-arm64` run of the same root, named in the result
        "measured_by": result.get("measured_by", "make test-pi-matrix"),
    }
    if not record["installs"]:
        record["reason"] = _install_failure(install.get("errors", []))
        record["pip_errors"] = install.get("errors", [])
        record["verdict"] = f"not supported: {record['reason']}"
        return record
    tests, captions = result["tests"], result["captions"]
    versions = captions.get("versions", {})
    backends = sorted(set(captions["backends"].values()))
    delegates = captions.get("delegates") or {}
    without_sys = result.get("without_sys")
    record.update(
        install_seconds=install["seconds"],
        download_bytes=install["download_bytes"],
        fetched_bytes=install.get("fetched_bytes"),
        backtracked=install.get("backtracked"),
        backend=", ".join(f"{b} {versions.get(b.replace('_', '-'), '')}".strip() for b in backends),
        delegate=delegates.get("encoder"),
        delegates=delegates,
        numpy=versions.get("numpy"),
        opencv=versions.get("opencv-python-headless"),
        tests={k: tests[k] for k in ("passed", "failed", "skipped")},
        builtin=_rate(result.get("compare")),
        demo=_rate(result.get("compare_demo")),
        builtin_same_backend=_rate(result.get("compare_same_backend")),
        builtin_full_size=_rate(result.get("compare"), FULL_SIZE_GROUP),
        builtin_full_size_same_backend=_rate(result.get("compare_same_backend"), FULL_SIZE_GROUP),
        demo_same_backend=_rate(result.get("compare_demo_same_backend")),
        demo_full_size=_rate(result.get("compare_demo"), FULL_SIZE_GROUP),
        demo_full_size_same_backend=_rate(result.get("compare_demo_same_backend"), FULL_SIZE_GROUP),
        check_photos=(result.get("compare") or {}).get("groups", {}).get(CHECK_GROUP),
        without_sys=without_sys,
    )
    if record["check_photos"]:
        record["check_photos"] = {k: record["check_photos"][k] for k in ("identical", "images")}
    rates = [
        record[f"{bundle}{size}"] for bundle in ("builtin", "demo") for size in ("", "_full_size")
    ]
    rates = [r for r in rates if r]
    if tests["failed"] or not tests["passed"]:
        record["verdict"] = f"fails: {tests['failed']} runtime tests fail"
    elif rates and all(r["identical"] >= IDENTICAL_FOR_WORKS * r["images"] for r in rates):
        record["verdict"] = "works"
    else:
        record["verdict"] = "runs; captions differ from x86's"
    return record


def update_record(path: Path, rows: list[dict]) -> list[dict]:
    """The record at `path` with these rows replacing theirs (same root and extra), in
    ROWS order; written back."""
    old = json.loads(path.read_text()) if path.is_file() else []
    merged = {(r["root"], r["extra"]): r for r in old}
    merged.update({(r["root"], r["extra"]): r for r in rows})
    order = [(root, extra) for _, root, extra in ROWS]
    ordered = [merged[k] for k in order if k in merged]
    ordered += [r for k, r in merged.items() if k not in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ordered, indent=2) + "\n")
    return ordered


HEADER = (
    "| image | Debian root | Python, glibc | install (binary wheels only) | install time "
    "| download | backend (delegate) | runtime tests | identical to x86: built-in model, "
    "Flickr8k 224 px; full size | identical to x86: demo bundle, 224 px; full size | verdict |"
)


def _identical(rate: dict | None, same: dict | None = None) -> str:
    if not rate:
        return "-"
    cell = f"{rate['identical']}/{rate['images']}"
    if same:
        cell += f" ({same['identical']}/{same['images']} vs x86 tflite-runtime)"
    return cell


def _bundle_cell(r: dict, bundle: str) -> str:
    """One bundle's identical-to-x86 counts: the 224 px set; the full-size set."""
    cell = _identical(r[bundle], r.get(f"{bundle}_same_backend"))
    if r.get(f"{bundle}_full_size"):  # rows measured before 2026-12-07 have none
        full_size = r[f"{bundle}_full_size"]
        cell += "; " + _identical(full_size, r.get(f"{bundle}_full_size_same_backend"))
    return cell


def markdown(rows: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count(" | ") + 1)]
    for r in rows:
        machine = r["machine"] + (f", QEMU {r['emulated_cpu']}" if r.get("emulated_cpu") else "")
        root = f"{r['root']} ({machine})"
        glibc = (r.get("glibc") or "").removeprefix("glibc-")
        runtime = r["python"] + (f", glibc {glibc}" if glibc else "")
        command = f"`{r['command']}`"
        if not r["installs"]:
            lines.append(
                f"| {r['image']} | {root} | {runtime} | {command} | - | - | - | - | - | - "
                f"| **not supported**: {r['reason']} |"
            )
            continue
        tests = r["tests"]
        tests_cell = f"{tests['passed']} passed, {tests['failed']} failed"
        download = f"{r['download_bytes'] / 1e6:.0f} MB"
        if r.get("backtracked"):
            download += " (backtracked: " + ", ".join(r["backtracked"]) + ")"
        verdict = "**works**" if r["verdict"] == "works" else r["verdict"]
        verdict += _without_sys(r)
        lines.append(
            f"| {r['image']} | {root} | {runtime} | {command} | {r['install_seconds']:.0f} s "
            f"| {download} | {r['backend']} ({r.get('delegate') or '?'}) | {tests_cell} "
            f"| {_bundle_cell(r, 'builtin')} | {_bundle_cell(r, 'demo')} | {verdict} |"
        )
    dates = sorted({r["measured"] for r in rows})
    lines.append("")
    lines.append(
        f"Measured {', '.join(dates)} by `make test-pi-matrix` (QEMU user-mode emulation; "
        'install times are emulated, not a Pi\'s). "works": installs from binary wheels, '
        "the runtime tests pass and the captions equal x86's on at least "
        f"{IDENTICAL_FOR_WORKS:.0%} of the images of each set, with each bundle measured. "
        "Flickr8k 224 px: the first 200 test photos of the 224 px copy, the encoder's input "
        "size; full size: the 60 test photos at their original size, which the device "
        "resizes first. Install time and download are the venv's first install (pip "
        "download + install, the wheelhouse's size), kept while the wheel's dependencies "
        "are unchanged."
    )
    for r in rows:
        if r.get("measured_by", "make test-pi-matrix") != "make test-pi-matrix":
            lines.append("")
            lines.append(
                f"{r['image']} [{r['extra']}]: from {r['measured_by']}, not yet rerun by "
                "`make test-pi-matrix` (no demo-bundle column, no delegate)."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("runs", help="the ROOT:EXTRA pairs, one per row")
    report = sub.add_parser("report", help="result folders -> record and table")
    report.add_argument("folders", nargs="+", type=Path)
    report.add_argument("--record", type=Path, required=True)
    report.add_argument("--out", type=Path)
    render = sub.add_parser("render", help="the record's table into a Markdown file")
    render.add_argument("--record", type=Path, required=True)
    render.add_argument("--into", type=Path, required=True)
    render.add_argument("--marker", default="pi-matrix")
    args = parser.parse_args(argv)

    if args.command == "runs":
        print(" ".join(f"{root}:{extra}" for _, root, extra in ROWS))
        return 0
    if args.command == "render":
        if not args.record.is_file():
            print(
                f"matrix.py: {args.record}: not found; run 'make test-pi-matrix'", file=sys.stderr
            )
            return 2
        try:
            replace_between_markers(
                args.into, args.marker, markdown(json.loads(args.record.read_text()))
            )
        except ValueError as exc:
            print(f"matrix.py: {exc}", file=sys.stderr)
            return 2
        return 0
    rows, status = [], 0
    for folder in args.folders:
        path = folder / "result.json"
        if not path.is_file():
            print(f"matrix.py: {path}: no result (the run stopped before it)", file=sys.stderr)
            status = 1
            continue
        rows.append(row(json.loads(path.read_text())))
        if rows[-1]["verdict"].startswith("fails"):
            status = 1
    table = markdown(update_record(args.record, rows))
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
