"""Measure one bundle, in a process of its own (caption-bench starts one per bundle).

    python -m edgecap.benchmarks.measure SETTINGS.json BUNDLE RESULT.json [RUNTIME FLAGS...]

A process per bundle makes peak RSS a per-bundle figure (no other bundle's models, and
no TensorFlow from the Keras baselines, in the same address space) and keeps one bundle's
crash from ending the run. SETTINGS.json is the run's Settings (caption-bench writes it
once for every bundle), the runtime flags are add_runtime_options' (RuntimeOptions.to_argv);
the result (status "ok" or "failed: reason") goes to RESULT.json.

Peak RSS is VmHWM from /proc/self/status: the high-water mark of this process's own
memory map, which exec starts afresh. ru_maxrss is the fallback where /proc is missing
(macOS); on Linux it would also count the parent's pages at the fork that started us.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecap.edge_runtime.bundle import RuntimeOptions

    from .bench_result import BundleResult, Settings

# Import cost of the runtime, from the first line of this module (numpy, Pillow, backend
# modules load lazily below); the cold-start figure in bench.py measures the whole process.
_T0 = time.perf_counter()

MIN_SAMPLES = 5  # per latency loop, however short --budget-s


def bundle_recipe(bundle: str | Path) -> tuple[str, str | None, str | None]:
    """(recipe name, format, precision) of a bundle, as its manifest records them.

    A bundle whose manifest cannot be read (or records no recipe) still gets a row, as
    'unknown': the benchmark reports broken bundles instead of stopping at them.
    """
    from edgecap.edge_runtime.errors import BundleError
    from edgecap.edge_runtime.manifest import load_manifest

    try:
        recipe = load_manifest(bundle, verify_hashes=False).recipe
    except BundleError:
        recipe = None
    if recipe is None:
        return "unknown", None, None
    return recipe.name, recipe.format, recipe.precision


def peak_rss_mb() -> tuple[float, str]:
    """This process's peak resident set size in MB, and how it was read."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "VmHWM (/proc/self/status)"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, in kilobytes on Linux and the BSDs.
    divisor = 2**20 if sys.platform == "darwin" else 1024
    return peak / divisor, "ru_maxrss (getrusage RUSAGE_SELF)"


def measure(bundle: str | Path, args: Settings, runtime: RuntimeOptions) -> BundleResult:
    """Everything caption-bench reports for one bundle, except the cold start and ratios
    (those need fresh processes and the baselines; bench.py adds them)."""
    import numpy as np

    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.edge_runtime.decoding import DecodeOptions, TwoWayModel
    from edgecap.edge_runtime.evaluation.timing import (
        LatencyStats,
        captions_per_second,
        latency_images,
        summarize,
        time_calls,
    )
    from edgecap.edge_runtime.manifest import find_source_run

    from .bench_result import BundleSize, MeasuredBundle

    import_ms = (time.perf_counter() - _T0) * 1e3
    bundle = Path(bundle)
    dataset = None
    if args.data:
        from edgecap.edge_runtime.evaluation.datasets import load_dataset

        dataset = load_dataset(args.data)
        dataset.split_items(args.split)  # a DatasetError naming the split if it is unknown
    images = latency_images(dataset, args.split)

    start = time.perf_counter()
    captioner = Captioner.open(bundle, runtime)
    init_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    captioner.caption(images[0])
    first_ms = (time.perf_counter() - start) * 1e3
    beam = DecodeOptions(beam_width=args.beam)
    manifest = captioner.manifest

    from edgecap.edge_runtime.preprocess import preprocess

    pixels = [preprocess(im, manifest.preprocessing)[None] for im in images]  # each [1, S, S, 3]
    encode = captioner.bundle.encode_pixels
    features = encode(pixels[0])  # [1, F]
    step_model = captioner.step_model
    # A twoway model writes every caption in both directions: its step is one of each.
    directions = (
        [step_model.forward, step_model.backward]
        if isinstance(step_model, TwoWayModel)
        else [step_model]
    )
    stepping = [(direction, direction.init(features)) for direction in directions]
    start_token = np.array([manifest.start_id], dtype=np.int32)  # [1]
    n = len(images)
    loops = {
        "encoder": lambda i: encode(pixels[i % n]),
        "decoder_step": lambda i: [d.step(start_token, s) for d, s in stepping],
        "caption_greedy": lambda i: captioner.caption(images[i % n]),
        f"caption_beam{args.beam}": lambda i: captioner.caption(images[i % n], decode=beam),
    }
    latency, throughput = {}, {}
    for name, fn in loops.items():
        samples = time_calls(fn, args.budget_s, warmup=args.warmup, min_samples=MIN_SAMPLES)
        stats = summarize(samples)
        latency[name] = LatencyStats(**stats.to_json())  # rounded as the file holds it
        if name.startswith("caption_"):
            throughput[name.removeprefix("caption_")] = captions_per_second(stats)

    quality = None
    if dataset is not None and args.quality_images != 0:
        from edgecap.edge_runtime.evaluation.metrics import caption_split, score_split

        ids = dataset.splits[args.split][: args.quality_images]  # None: all of them
        quality = {}
        for mode, decode in (("greedy", DecodeOptions()), (f"beam{args.beam}", beam)):
            predictions = caption_split(captioner, dataset, ids, decode)
            quality[mode] = score_split(dataset, args.split, predictions).to_json()
    files = {p.name: p.stat().st_size for p in sorted(bundle.iterdir()) if p.is_file()}
    peak_mb, rss_method = peak_rss_mb()
    run = find_source_run(bundle, manifest.source)
    result = MeasuredBundle(
        **_identity(bundle),
        status="ok",
        backend=captioner.backends["encoder"],
        backends=captioner.backends,
        delegate=captioner.delegates["encoder"],
        delegates=captioner.delegates,
        threads=runtime.num_threads,
        providers=list(runtime.providers) if runtime.providers else None,
        decoder_kind=manifest.decoder_kind,
        source_run=str(run) if run is not None else None,
        size=BundleSize(total_bytes=sum(files.values()), files=files),
        import_ms=round(import_ms, 2),
        init_ms=round(init_ms, 3),
        first_caption_ms=round(first_ms, 3),
        latency_ms=latency,
        captions_per_s=throughput,
        quality_by_decode=quality,
        peak_rss_mb=round(peak_mb, 1),
        rss_method=rss_method,
    )
    captioner.close()
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    from edgecap.edge_runtime.atomic import write_json_atomic
    from edgecap.edge_runtime.bundle import RuntimeOptions, add_runtime_options
    from edgecap.edge_runtime.errors import EdgeCaptionError
    from edgecap.edge_runtime.schema import from_json, to_json

    from .bench_result import SchemaError, Settings

    # caption-bench's child: SETTINGS.json BUNDLE OUT.json, then the runtime flags
    parser = argparse.ArgumentParser(prog="python -m edgecap.benchmarks.measure")
    for name in ("settings", "bundle", "out"):
        parser.add_argument(name)
    add_runtime_options(parser)
    args = parser.parse_args(argv)
    bundle, out = args.bundle, args.out
    settings_json = json.loads(Path(args.settings).read_text(encoding="utf-8"))
    settings = from_json(Settings, settings_json, args.settings, error=SchemaError)
    try:
        entry = measure(bundle, settings, RuntimeOptions.from_args(args))
        code = 0
    except EdgeCaptionError as exc:
        entry, code = failed_entry(bundle, str(exc)), 1
    except Exception as exc:  # a crash must still leave a row that says why
        traceback.print_exc()
        entry, code = failed_entry(bundle, f"{type(exc).__name__}: {exc}"), 1
    write_json_atomic(out, to_json(entry))
    return code


def _identity(bundle: str | Path) -> dict[str, str | None]:
    """The fields every row of a bundle has, measured or not."""
    variant, model_format, precision = bundle_recipe(bundle)
    return {"name": Path(bundle).name, "path": str(bundle), "variant": variant,
            "format": model_format, "precision": precision}  # fmt: skip


def failed_entry(bundle: str | Path, reason: str) -> BundleResult:
    from .bench_result import BundleResult

    return BundleResult(**_identity(bundle), status=f"failed: {reason}")


if __name__ == "__main__":
    sys.exit(main())
