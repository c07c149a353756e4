"""A bundle on real inputs, not on small already-decoded images: what the runtime's fast
input path (a reduced JPEG decode, one resize of BGR frames) saves over the exact path it
replaced, and what it changes.

    python export/studies/input_kinds.py BUNDLE --photos DIR [--photos DIR ...] --out DIR
    caption-bench render inputs DIR/inputs.json --into docs/benchmarks.md

A study, not part of the installed package (make bench-inputs runs it from the checkout).

Every input kind (KINDS) runs in a process of its own, so that its peak RSS is its own,
through the runtime's fast path and the exact path it replaced, measured in the same run
so that the two compare as a ratio; then the fast path's fidelity against the exact one.
What each row and column means: docs/benchmarks.md, "Real inputs".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgecap.benchmarks.tables import markdown_table
from edgecap.edge_runtime.bundle import THREADS_HELP

KINDS = ("photo file", "12 MP JPEG file", "720p frame", "1080p frame", "720p video, every frame")
FRAME_SIZES = {"720p frame": (1280, 720), "1080p frame": (1920, 1080)}
LARGE_SIZE = (4000, 3000)  # 12 MP
VIDEO_FRAMES = 60  # two seconds at 30 fps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python export/studies/input_kinds.py",
        description="Benchmark a bundle on real inputs (photo files, 12 MP JPEGs, 720p and "
        "1080p frames, a 720p video) through the fast and the exact preprocessing, and "
        "measure what the fast path changes.",
    )
    p.add_argument("bundle", type=Path, help="bundle folder written by caption-export")
    p.add_argument(
        "--photos",
        type=Path,
        action="append",
        required=True,
        help="folder of real JPEG photos (repeatable), e.g. ../shared/data/flickr8k-originals",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for inputs.json and inputs.md")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per row (default 15)")
    p.add_argument(
        "--large", type=int, default=20, help="photos also checked as 12 MP JPEGs (default 20)"
    )
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    return p


def _photos(folders: list[Path]) -> list[Path]:
    from edgecap.edge_runtime.sources import image_files

    jpegs = (".jpg", ".jpeg")
    photos = [p for f in folders for p in image_files(f) if p.suffix.lower() in jpegs]
    if not photos:
        raise SystemExit(
            f"input_kinds: no .jpg photos in {', '.join(map(str, folders))}; "
            "pass --photos with a folder of real photos (e.g. ../shared/data/flickr8k-originals)"
        )
    return photos


def _make_large(photo: Path, folder: Path) -> Path:
    from PIL import Image

    path = folder / f"12mp-{photo.stem}.jpg"
    with Image.open(photo) as img:
        img.convert("RGB").resize(LARGE_SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def _make_video(photo: Path, folder: Path) -> Path:
    import numpy as np

    from edgecap.edge_runtime.overlay import AnnotatedVideoWriter

    path = folder / "720p30.mp4"
    frame = _frame(photo, FRAME_SIZES["720p frame"])
    writer = AnnotatedVideoWriter(path, 30.0, FRAME_SIZES["720p frame"])
    for i in range(VIDEO_FRAMES):
        writer.write(np.roll(frame, 8 * i, axis=1))  # a slow pan
    writer.close()
    return path


# ---- the child: one kind, one path, in a fresh process --------------------------------


def _child(args: argparse.Namespace) -> dict:
    from edgecap.benchmarks.measure import peak_rss_mb
    from edgecap.edge_runtime.decoding import greedy_decode
    from edgecap.edge_runtime.preprocess import load_image, preprocess

    captioner = _open(args.bundle, args.threads)
    prep, manifest = captioner.manifest.preprocessing, captioner.manifest
    encode_pixels, steps = captioner.bundle.encode_pixels, captioner.step_model
    fast = args.path == "fast"

    if args.kind == "720p video, every frame":
        from edgecap.edge_runtime.stream import StreamOptions, caption_video

        start, captions = time.perf_counter(), 0
        for event in caption_video(captioner, str(args.input), StreamOptions(every=1)):
            captions += event.result is not None
        seconds = time.perf_counter() - start
        rss, _ = peak_rss_mb()
        return {
            "captions": captions,
            "captions_per_s": round(captions / seconds, 2),
            "peak_rss_mb": round(rss, 1),
        }

    frame = _frame(args.input, FRAME_SIZES[args.kind]) if args.kind in FRAME_SIZES else None

    def once() -> dict[str, float]:
        t0 = time.perf_counter()
        if frame is None:
            image = load_image(args.input, min_side=prep.input_size if fast else None)
        t1 = time.perf_counter()
        if frame is None:
            pixels = preprocess(image, prep, exact=not fast)
        elif fast:
            pixels = preprocess(frame, prep, bgr=True)
        else:  # how the frame went before: an RGB copy at full size, then the exact rule
            pixels = preprocess(_rgb(frame), prep, exact=True)
        t2 = time.perf_counter()
        features = encode_pixels(pixels[None])  # [1, F]
        t3 = time.perf_counter()
        greedy_decode(steps, features, manifest.start_id, manifest.end_id, manifest.max_length)
        t4 = time.perf_counter()
        return {
            "decode": (t1 - t0) * 1e3,
            "preprocess": (t2 - t1) * 1e3,
            "encoder": (t3 - t2) * 1e3,
            "decoder": (t4 - t3) * 1e3,
            "total": (t4 - t0) * 1e3,
        }

    once()  # warm-up: first calls allocate
    runs = [once() for _ in range(args.repeats)]
    rss, _ = peak_rss_mb()
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    return {"median_ms": medians, "peak_rss_mb": round(rss, 1), "repeats": args.repeats}


def _open(bundle: Path, threads: int | None):
    from edgecap.edge_runtime.bundle import RuntimeOptions
    from edgecap.edge_runtime.captioner import Captioner

    return Captioner.open(bundle, RuntimeOptions(num_threads=threads))


def _frame(photo: Path, size: tuple[int, int]):
    """A BGR uint8 frame [H, W, 3] made from a photo, as a camera delivers it."""
    import numpy as np
    from PIL import Image

    with Image.open(photo) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB").resize(size))[..., ::-1])


def _rgb(frame):
    """A BGR frame as a full-size RGB image: the copy the exact path made of every frame."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(frame[..., ::-1]))


def _run_child(bundle: Path, kind: str, path: str, source: Path, args, out: Path) -> dict:
    """`_child` in a fresh process; its arguments go as one JSON object, its result to `out`."""
    from edgecap.benchmarks.child_processes import child_env, run_child

    child = {"bundle": str(bundle), "kind": kind, "path": path, "input": str(source),
             "repeats": args.repeats, "threads": args.threads, "out": str(out)}  # fmt: skip
    command = [sys.executable, __file__, "--child"]
    result = run_child([*command, json.dumps(child)], out, child_env())
    return (
        {"status": f"failed: {result}"} if isinstance(result, str) else {"status": "ok", **result}
    )


def _fidelity(bundle: Path, photos: list[Path], large: list[Path], threads: int | None) -> dict:
    import numpy as np
    from PIL import Image

    from edgecap.edge_runtime.preprocess import load_image, preprocess

    out = {}
    with _open(bundle, threads) as captioner:
        # The exact path: the full image through the resize rule, nothing shrunk first.
        prep = captioner.manifest.preprocessing

        def exact(image: Image.Image) -> np.ndarray:
            return captioner.bundle.encode_pixels(
                preprocess(image, prep, exact=True)[None]
            )  # [1, F]

        def frames(size: tuple[int, int]):  # (BGR frame [H, W, 3], the same frame in RGB)
            for photo in photos[: len(large)]:
                frame = _frame(photo, size)
                yield frame, _rgb(frame)

        groups = {
            "photos as they came": ((captioner.encode(p), exact(load_image(p))) for p in photos),
            "12 MP JPEGs": ((captioner.encode(p), exact(load_image(p))) for p in large),
            **{
                f"{kind}s": ((captioner.encode(f, bgr=True), exact(rgb)) for f, rgb in frames(size))
                for kind, size in FRAME_SIZES.items()
            },
            # Not the fast path: how far any small change moves the captions, for scale.
            "720p frames moved 1 px (both exact)": (
                (exact(rgb.crop((1, 0, rgb.width, rgb.height))), exact(rgb))
                for _, rgb in frames(FRAME_SIZES["720p frame"])
            ),
        }
        for name, pairs in groups.items():
            diffs, same = [], 0
            for fast, slow in pairs:
                diffs.append(float(np.abs(fast - slow).max()))
                words = [captioner.caption_features(f)[0].tokens for f in (fast, slow)]
                same += words[0] == words[1]
            out[name] = {
                "images": len(diffs),
                "feature_max_abs_diff": round(max(diffs), 4),
                "identical_caption_rate": round(same / len(diffs), 4),
            }
    return out


def inputs_report(result: dict) -> str:
    """inputs.md: the stage medians of every input kind and path, then the fidelity table."""
    lines = [
        f"The input-kinds study on `{Path(result['bundle']).name}`, {result['device']} "
        f"(1-minute load average {result['load_average'][0] if result['load_average'] else '?'} "
        f"at the start); medians of {result['repeats']} runs, ms. *exact*: the full-size "
        "decode and channel swap the runtime used before; *fast*: today's path.",
        "",
    ]
    stages = ("decode", "preprocess", "encoder", "decoder", "total")
    table = []
    for row in result["rows"]:
        if row["status"] != "ok":
            table.append([row["kind"], row["path"], row["status"]])
        elif "captions_per_s" in row:  # the video: a rate, no stages
            video = f"{row['captions_per_s']} captions/s ({row['captions']} frames)"
            table.append([row["kind"], row["path"], video, "", "", "", "", row["peak_rss_mb"]])
        else:
            ms = row["median_ms"]
            cells = ["—" if k == "decode" and row["kind"].endswith(" frame") else f"{ms[k]:.2f}"
                     for k in stages]  # fmt: skip
            table.append([row["kind"], row["path"], *cells, row["peak_rss_mb"]])
    lines += [markdown_table(["input", "path", *stages, "peak RSS (MB)"], table, 2), ""]
    fidelity = [
        [name, f["images"], f["feature_max_abs_diff"], f"{f['identical_caption_rate']:.1%}"]
        for name, f in result["fidelity"].items()
    ]
    header = ["fast path vs exact", "images", "feature max abs diff", "identical captions"]
    lines.append(markdown_table(header, fidelity))
    return "\n".join(lines) + "\n"


def before_after_table(results: list[dict]) -> str:
    """The README's table: per bundle and input kind, the exact path's total and peak RSS
    beside the fast path's, with the fast path's preprocess against its encoder."""
    table = []
    for result in results:
        by_kind: dict[str, dict[str, dict]] = {}
        for row in result["rows"]:
            by_kind.setdefault(row["kind"], {})[row["path"]] = row
        for kind, paths in by_kind.items():
            fast, exact = paths.get("fast", {}), paths.get("exact", {})
            if fast.get("status") != "ok":
                continue
            bundle = Path(result["bundle"])
            name = f"{bundle.parent.name}/{bundle.name}"  # e.g. demo/bundle-int8
            if "captions_per_s" in fast:
                table.append([name, kind, "", f"{fast['captions_per_s']} captions/s", "", "",
                             f"{fast['peak_rss_mb']:.0f}"])  # fmt: skip
                continue
            ms = fast["median_ms"]
            before = exact.get("median_ms", {}).get("total")
            rss = f"{fast['peak_rss_mb']:.0f}"
            if exact.get("status") == "ok":
                rss = f"{exact['peak_rss_mb']:.0f} → {rss}"
            table.append([
                name, kind, "—" if before is None else f"{before:.2f}", f"**{ms['total']:.2f}**",
                f"{ms['preprocess']:.2f}", f"{ms['encoder']:.2f}", rss,
            ])  # fmt: skip
    header = ["bundle", "input", "exact path (ms)", "fast path (ms)", "fast: preprocess",
              "encoder", "peak RSS (MB)"]  # fmt: skip
    return markdown_table(header, table, 2) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from edgecap.edge_runtime.atomic import write_json_atomic, write_text_atomic

    if argv and argv[0] == "--child":  # _run_child's process
        child = argparse.Namespace(**json.loads(argv[1]))
        write_json_atomic(child.out, _child(child))
        return 0
    args = _parser().parse_args(argv)

    from edgecap.benchmarks.fingerprint import fingerprint, load_average

    photos = _photos(args.photos)
    measured = []  # one per input kind and path
    with tempfile.TemporaryDirectory(prefix="caption-bench-inputs-") as tmp:
        work = Path(tmp)
        sources = {
            "photo file": photos[0],
            "12 MP JPEG file": _make_large(photos[0], work),
            "720p frame": photos[0],
            "1080p frame": photos[0],
            "720p video, every frame": _make_video(photos[0], work),
        }
        for kind in KINDS:
            # The video loop runs through the Captioner, which has only the fast path.
            for path in ("fast",) if kind.endswith("every frame") else ("exact", "fast"):
                print(f"input_kinds: {kind}, {path} path", file=sys.stderr, flush=True)
                out = work / f"{KINDS.index(kind)}-{path}.json"
                outcome = _run_child(args.bundle, kind, path, sources[kind], args, out)
                measured.append({"kind": kind, "path": path, **outcome})
        large = [_make_large(p, work) for p in photos[: args.large]]
        print("input_kinds: fidelity, fast path vs exact", file=sys.stderr, flush=True)
        fidelity = _fidelity(args.bundle, photos, large, args.threads)
    result = {
        "bundle": str(args.bundle),
        "device": fingerprint().device,
        "load_average": load_average(),
        "repeats": args.repeats,
        "photos": [str(p) for p in args.photos],
        "rows": measured,
        "fidelity": fidelity,
    }
    write_json_atomic(args.out / "inputs.json", result)
    text = inputs_report(result)
    write_text_atomic(args.out / "inputs.md", text)
    print(text)
    print(f"wrote {args.out / 'inputs.json'} and inputs.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
