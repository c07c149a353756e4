"""The summary table of Debian-root runs (tests/platforms/debian_root.sh): one row per
result folder, in Markdown.

    python tests/platforms/summary.py artifacts/platforms/debian13-arm64-edge ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| root | python | machine | extra | backend | runtime tests | identical: check photos "
    "| identical: Flickr8k test | BLEU-4 x86 / root | CIDEr-D x86 / root | install (first) | download "
    "| whole run |"
)


def row(result: dict) -> str:
    facts, tests, install = result["facts"], result["tests"], result["install"]
    groups = result["compare"]["groups"]
    check = groups.get("imagenet_check", {})
    f8k = groups.get("Flicker8k_Dataset", {})
    venv = f" (venv {result['venv']})" if result.get("venv", "new") != "new" else ""
    machine = facts["machine"]
    if facts.get("emulated_cpu"):
        machine += f" (QEMU {facts['emulated_cpu']})"
    backend = ", ".join(sorted(set(result["captions"]["backends"].values())))
    tests_cell = f"{tests['passed']} passed, {tests['failed']} failed"
    if tests["skipped"]:
        tests_cell += f", {tests['skipped']} skipped"

    def identical(group: dict) -> str:
        if not group:
            return "-"
        return f"{group['identical']}/{group['images']}"

    def scores(key: str) -> str:
        if "scores_a" not in f8k:
            return "-"
        return f"{f8k['scores_a'][key]:.4f} / {f8k['scores_b'][key]:.4f}"

    return (
        f"| {result['root']} | {facts['python']} | {machine} | {result['extra']} "
        f"| {backend} | {tests_cell} | {identical(check)} | {identical(f8k)} "
        f"| {scores('bleu4')} | {scores('cider_d')} | {install['seconds']:.0f} s "
        f"| {install['download_bytes'] / 1e6:.1f} MB | {result['seconds']} s{venv} |"
    )


def main(argv: list[str] | None = None) -> int:
    folders = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    rows, notes, missing = [], [], []
    for folder in folders:
        path = folder / "result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            rows.append(row(result))
            same = result.get("compare_same_backend")
            if same:
                cells = ", ".join(
                    f"{name} {g['identical']}/{g['images']}" for name, g in same["groups"].items()
                )
                notes.append(
                    f"{result['root']} {result['extra']} against x86 with the same backend "
                    f"(the host's pi-legacy venv): {cells} identical"
                )
        else:
            missing.append(str(folder))
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    print("\n".join(rows))
    for note in notes:
        print(f"\n{note}")
    for folder in missing:
        print(f"(no result in {folder})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
