"""Captions per second from several threads: one shared Captioner (its models take turns,
a lock per model) against one Captioner per thread (each its own interpreters: what a
pool of interpreters would give).

    python export/studies/threads.py BUNDLE... --images FOLDER [--threads 1 2 4]
        [--seconds 2] [--repeats 3] [--out FILE.json]

Each thread captions decoded photos (preprocessing, encoder, greedy decoding) round robin
for --seconds; a configuration is measured --repeats times and the median is reported.
Prints a Markdown table (docs/benchmarks.md "Threads").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.preprocess import load_image
from edgecap.edge_runtime.sources import image_files


def captions_per_second(
    captioners: list[Captioner], images: list[np.ndarray], seconds: float
) -> float:
    """len(captioners) threads, thread k on captioners[k] (the same object for a shared
    one), all captioning for `seconds`: total captions / wall time."""
    counts = [0] * len(captioners)
    start = threading.Barrier(len(captioners) + 1)
    stop = threading.Event()

    def work(k: int) -> None:
        start.wait()
        i = k
        while not stop.is_set():
            captioners[k].caption(images[i % len(images)])
            counts[k] += 1
            i += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(captioners))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def measure(
    bundle: Path, images: list[np.ndarray], threads: list[int], seconds: float, repeats: int
) -> list[dict]:
    rows = []
    with Captioner.open(bundle) as shared:
        for image in images[:5]:  # warm-up
            shared.caption(image)
        for n in threads:
            layouts = [("shared", [shared] * n)]
            if n > 1:
                layouts.append(("one per thread", [Captioner.open(bundle) for _ in range(n)]))
            for layout, captioners in layouts:
                rates = [captions_per_second(captioners, images, seconds) for _ in range(repeats)]
                rows.append(
                    {"bundle": bundle.name, "threads": n, "layout": layout,
                     "captions_per_s": statistics.median(rates), "runs": rates}
                )  # fmt: skip
                if layout != "shared":
                    for captioner in captioners:
                        captioner.close()
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| bundle | layout | 1 thread | 2 threads | 4 threads |",
        "|---|---|---:|---:|---:|",
    ]
    for bundle in dict.fromkeys(r["bundle"] for r in rows):
        for layout in ("shared", "one per thread"):
            cells = []
            for n in (1, 2, 4):
                found = [
                    r["captions_per_s"]
                    for r in rows
                    if r["bundle"] == bundle and r["threads"] == n
                    and (r["layout"] == layout or n == 1)
                ]  # fmt: skip
                cells.append(f"{found[0]:.0f}" if found else "—")
            lines.append(f"| {bundle} | {layout} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export/studies/threads.py")
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="a folder of photos")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50, help="photos to cycle through")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    images = [np.asarray(load_image(p)) for p in image_files(args.images)[: args.limit]]
    if not images:
        parser.error(f"{args.images}: no photos")
    rows = []
    for bundle in args.bundles:
        rows += measure(bundle, images, args.threads, args.seconds, args.repeats)
    print(render(rows))
    if args.out:
        write_json_atomic(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
