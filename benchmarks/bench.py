"""`caption-bench`: size, speed, memory and quality of bundles on this device, against
Keras baselines measured in the same run; and `caption-bench merge` across devices.

    caption-bench BUNDLE... --out DIR [--data DIR --split test] [--min-scene-accuracy X]
    caption-bench merge RESULTS.json... --out DIR
    caption-bench render KIND FILE... --into DOC   (benchmarks/render.py)

A run writes DIR/results.json (its types: benchmarks/bench_result.py), DIR/results.md (the table)
and DIR/latency_quality.png. Each bundle is measured in a process of its own
(benchmarks/measure.py); the Keras baselines run in processes of their own too
(benchmarks/child_processes.py), so TensorFlow never shares memory or cores with a bundle.

Exit status: the parser's epilog (docs/benchmarks.md, "Options and exit status"). A failed
bundle is an error (2) even without a gate: a table with a silently missing row would not
be trustworthy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from edgecap.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecap.edge_runtime.bundle import RuntimeOptions, add_runtime_options
from edgecap.edge_runtime.evaluation.timing import OUTLIER_RULE, latency_images
from edgecap.edge_runtime.schema import from_json, to_json

from . import child_processes as children
from .bench_result import (
    SCHEMA,
    SCHEMA_VERSION,
    Baselines,
    BenchResult,
    BundleResult,
    Conditions,
    Gate,
    MeasuredBundle,
    SchemaError,
    Settings,
    Speedup,
    load_results,
    portable,
    validate,
)
from .fingerprint import fingerprint, label, load_average
from .measure import failed_entry

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "latency_quality.png"
CHILD_TIMEOUT_S = 1800  # one bundle's measurement


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caption-bench",
        description="Benchmark bundles on this device: file sizes, init and first caption, "
        "latency (encoder, decoder step, greedy and beam captions), peak RSS, quality, and "
        "Keras baselines as ratios. `caption-bench merge FILE... --out DIR` compares "
        "results files from several devices; `caption-bench render KIND FILE... --into DOC` "
        "puts a results table into a document.",
        epilog="exit status: 0 all measured (and the gate passed); 1 the --min-scene-accuracy "
        "gate failed; 2 a bundle or baseline could not be measured, or bad arguments",
    )
    p.add_argument("bundles", nargs="+", help="bundle folders written by caption-export")
    p.add_argument("--out", required=True, type=Path, help="folder for results.json/.md/.png")
    p.add_argument(
        "--data",
        help="the dataset to score and take images from: a Flickr8k-layout folder, a "
        "Karpathy split .json file or a COCO folder",
    )
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument(
        "--quality-images",
        type=int,
        default=None,
        help="score only the first N images of the split (default: all; 0: no quality)",
    )
    add_runtime_options(p)
    p.add_argument(
        "--budget-s", type=float, default=2.0, help="seconds per latency measurement (default 2)"
    )
    p.add_argument(
        "--warmup", type=int, default=5, help="unrecorded calls before each measurement (default 5)"
    )
    p.add_argument(
        "--beam", type=int, default=3, help="beam width measured besides greedy (default 3)"
    )
    p.add_argument(
        "--cold-repeats",
        type=int,
        default=3,
        help="fresh processes per cold start, median reported (default 3)",
    )
    p.add_argument(
        "--keras-run",
        type=Path,
        default=None,
        help="Keras run for the baselines (default: the bundles' source_run)",
    )
    p.add_argument(
        "--seed-images",
        type=int,
        default=children.SEED_STYLE_IMAGES,
        help=f"images decoded seed-style (default {children.SEED_STYLE_IMAGES})",
    )
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the Keras baselines (no TensorFlow needed)",
    )
    p.add_argument(
        "--min-scene-accuracy",
        type=float,
        default=None,
        help="regression gate: exit 1 if a bundle's greedy scene accuracy is below this",
    )
    p.add_argument(
        "--device", default=None, help="device label in tables (default: CPU model and cores)"
    )
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caption-bench merge",
        description="One comparison of caption-bench results from several devices.",
    )
    p.add_argument("results", nargs="+", type=Path, help="results.json files, one per device")
    p.add_argument("--out", required=True, type=Path, help="folder for merged.json/.md/.png")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.budget_s <= 0 or args.warmup < 0 or args.beam < 2 or args.cold_repeats < 1:
        parser.error("need --budget-s > 0, --warmup >= 0, --beam >= 2 and --cold-repeats >= 1")
    if args.seed_images < 1:
        parser.error("--seed-images must be at least 1")
    try:
        RuntimeOptions.from_args(args)  # the runtime flags: each names itself when wrong
    except ValueError as exc:
        parser.error(str(exc))
    if args.min_scene_accuracy is not None:
        if not args.data or args.quality_images == 0:
            parser.error("--min-scene-accuracy needs --data (and quality: not --quality-images 0)")
        from edgecap.edge_runtime.evaluation.scenes import load_scenes

        if not load_scenes(args.data):
            parser.error(
                f"--min-scene-accuracy needs a synthetic dataset; {args.data} has no scenes.json"
            )


def _measure_bundle(
    bundle: str, settings_file: Path, runtime: RuntimeOptions, work: Path, index: int
) -> BundleResult:
    out = work / f"bundle-{index}.json"
    command = [sys.executable, "-m", "edgecap.benchmarks.measure", str(settings_file), bundle]
    command += [str(out), *runtime.to_argv()]
    row = children.run_child(command, out, children.child_env(), CHILD_TIMEOUT_S)
    if isinstance(row, str):
        return failed_entry(bundle, row)
    return from_json(MeasuredBundle | BundleResult, row, str(out), error=SchemaError)


def _cold_start_image(args: argparse.Namespace, work: Path) -> Path:
    """The image every cold start captions: the split's first, or a seeded random one."""
    if args.data:
        from edgecap.edge_runtime.evaluation.datasets import load_dataset

        dataset = load_dataset(args.data)
        return dataset.image_path(dataset.split_items(args.split)[0][0])
    path = work / "random.png"
    latency_images(None, None, 1)[0].save(path)  # the latency loops' first random image
    return path


def _baselines(
    args: argparse.Namespace, settings: Settings, entries: list[BundleResult], work: Path
) -> Baselines:
    """The Keras baselines on --keras-run, else on the first measured bundle's source_run
    that still exists."""
    if args.no_baselines:
        return Baselines(status="skipped: --no-baselines")
    sources = [Path(e.source_run) for e in entries if e.ok and e.source_run]
    run = args.keras_run or next((s for s in sources if (s / "config.json").is_file()), None)
    if run is None:
        return Baselines(status="skipped: no Keras run found; pass --keras-run")
    if not (run / "config.json").is_file():
        return Baselines(
            status=f"failed: {run}: not a caption-train run (no config.json)", run=str(run)
        )
    print(f"caption-bench: Keras baselines on {run} (seed-style, stepwise, TF import + load)")
    result = children.keras_baselines(run, work / "keras.json", settings)
    if not result.ok:
        return result
    result.tf_cold_start = children.tf_cold_start(run, args.cold_repeats, args.threads)
    if result.tf_cold_start.status != "ok":
        result.status = f"failed: TensorFlow cold start: {result.tf_cold_start.status}"
    return result


def _speedups(entries: list[BundleResult], baselines: Baselines) -> None:
    """Add each bundle's ratios against the baselines (how many times faster)."""
    if not baselines.ok:
        return
    seed = baselines.seed_style.latency_ms.p50
    stepwise = baselines.keras_stepwise.latency_ms.p50
    tf = baselines.tf_cold_start.median_s
    run = Path(baselines.run).resolve()
    for entry in entries:
        if not entry.ok:
            continue
        ms = entry.latency_p50("caption_greedy")
        source = entry.source_run
        entry.speedup = Speedup(
            caption_vs_seed_style=round(seed / ms, 1),
            caption_vs_keras_stepwise=round(stepwise / ms, 2),
            cold_start_vs_tf=round(tf / entry.cold_s, 2) if entry.cold_s else None,
            baseline_is_source_run=bool(source) and Path(source).resolve() == run,
        )


def _gate(entries: list[BundleResult], threshold: float) -> list[str]:
    """Names and reasons of the bundles below the scene-accuracy threshold (greedy)."""
    failed = []
    for entry in entries:
        scene = (entry.quality("greedy") or {}).get("scene_accuracy")
        if scene is None:
            failed.append(f"{entry.path}: no scene accuracy ({entry.status})")
        elif scene < threshold:
            failed.append(f"{entry.path}: scene accuracy {scene:.4f} < {threshold}")
    return failed


def _settings(args: argparse.Namespace) -> Settings:
    """caption-bench's arguments as the results file records them."""
    picked = {
        name: getattr(args, name) for name in Settings.__dataclass_fields__ if hasattr(args, name)
    }
    return Settings(**picked, outlier_rule=OUTLIER_RULE, batch=1)


def run(argv: list[str]) -> int:
    parser = _run_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    from .report import markdown, plot_tradeoff, ratio_lines

    started = time.perf_counter()
    load_start = load_average()
    fp = fingerprint(args.device)
    print(f"caption-bench: {label(fp)}")
    entries = []
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as tmp:
        work = Path(tmp)
        try:
            image = _cold_start_image(args, work)
        except Exception as exc:  # DatasetError and friends: nothing can be measured without it
            print(f"caption-bench: error: {exc}", file=sys.stderr)
            return 2
        # What every bundle's child measures with: the Settings the results file records,
        # and the runtime flags (RuntimeOptions.to_argv).
        settings, runtime = _settings(args), RuntimeOptions.from_args(args)
        settings_file = work / "settings.json"
        write_json_atomic(settings_file, to_json(settings))
        for i, bundle in enumerate(args.bundles):
            t0 = time.perf_counter()
            entry = _measure_bundle(bundle, settings_file, runtime, work, i)
            if entry.ok:
                entry.cold_start = children.runtime_cold_start(
                    bundle, image, args.cold_repeats, runtime
                )
                scene = (entry.quality("greedy") or {}).get("scene_accuracy")
                print(
                    f"[{i + 1}/{len(args.bundles)}] {entry.variant:<15} {bundle}: "
                    f"{entry.latency_p50('caption_greedy'):.2f} ms/caption (p50, greedy)"
                    + (f", scene accuracy {scene:.3f}" if scene is not None else "")
                    + f" ({time.perf_counter() - t0:.0f} s)"
                )
            else:
                print(f"caption-bench: {bundle}: {entry.status}", file=sys.stderr)
            entries.append(entry)
        baselines = _baselines(args, settings, entries, work)
        if not baselines.ok and not args.no_baselines:
            print(f"caption-bench: baselines: {baselines.status}", file=sys.stderr)
    _speedups(entries, baselines)

    result = BenchResult(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        argv=["caption-bench", *argv],
        fingerprint=fp,
        conditions=Conditions(
            load_average_start=load_start,
            load_average_end=load_average(),
            wall_s=round(time.perf_counter() - started, 1),
        ),
        settings=settings,
        bundles=entries,
        baselines=baselines,
    )
    # Written without this machine's absolute paths: results files are committed and
    # compared across devices (portable() says what each becomes); read back, it is
    # checked the way merge will read it.
    result = validate(portable(to_json(result)), "caption-bench result")
    failed_gate: list[str] = []
    if args.min_scene_accuracy is not None:
        failed_gate = _gate(entries, args.min_scene_accuracy)  # printed: the paths as given
        failed = _gate(result.bundles, args.min_scene_accuracy)
        result.gate = Gate(min_scene_accuracy=args.min_scene_accuracy, failed=failed)

    out: Path = args.out
    write_json_atomic(out / RESULTS_FILE, to_json(result))
    text = markdown(result)
    write_text_atomic(out / MARKDOWN_FILE, text)
    plotted = plot_tradeoff([result], out / PLOT_FILE, f"caption-bench: {fp.device}")
    print()
    print(text)
    print("ratios:")
    for line in ratio_lines(result):
        print(f"  {line}")
    written = [RESULTS_FILE, MARKDOWN_FILE] + ([PLOT_FILE] if plotted else [])
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    print(f"caption-bench: {time.perf_counter() - started:.0f} s")

    for line in failed_gate:
        print(f"caption-bench: gate failed: {line}", file=sys.stderr)
    if failed_gate:
        return 1
    if any(not e.ok for e in entries) or baselines.status.startswith("failed"):
        return 2
    return 0


def merge(argv: list[str]) -> int:
    args = _merge_parser().parse_args(argv)
    from .report import merged_markdown, plot_device_bars, plot_tradeoff

    try:
        files = [load_results(path) for path in args.results]
    except SchemaError as exc:
        print(f"caption-bench merge: error: {exc}", file=sys.stderr)
        return 2
    results = [typed for _, typed in files]
    # Two files from one device (or two unnamed devices with the same CPU) stay apart.
    devices = Counter(r.fingerprint.device for r in results)
    for path, (written, result) in zip(args.results, files, strict=True):
        name = result.fingerprint.device
        if devices[name] > 1:
            result.fingerprint.device = written["fingerprint"]["device"] = f"{name} ({path.stem})"
    out: Path = args.out
    merged = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "merged_from": portable([str(p) for p in args.results]),
        "results": [written for written, _ in files],
    }
    write_json_atomic(out / "merged.json", merged)
    text = merged_markdown(results)
    write_text_atomic(out / "merged.md", text)
    plot_tradeoff(results, out / "merged_latency_quality.png", "caption-bench: all devices")
    plot_device_bars(results, out / "merged_devices.png")
    print(text)
    print(f"wrote {out / 'merged.json'}, merged.md, merged_latency_quality.png, merged_devices.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The main form has no subcommand word (`caption-bench BUNDLE...`), which argparse's
    # subparsers cannot express; the named subcommands are picked off first.
    if argv and argv[0] == "merge":
        return merge(argv[1:])
    if argv and argv[0] == "render":
        from . import render

        return render.main(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
