"""Reports of caption-bench results: Markdown tables and PNG plots.

The main table follows ultralytics' benchmark table (format, status, size, metric,
ms per image, FPS): one row per variant, the Keras baselines on top, failed bundles kept
with their reason. Rows are ordered by the manifest schema's formats, then its
precisions, so every table and plot of the project shows the formats in one order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecap.edge_runtime.manifest import MODEL_FORMATS, PRECISIONS

from .bench_result import BenchResult, BundleResult, MeasuredBundle, Scores
from .fingerprint import label
from .tables import markdown_table

SEED_STYLE = "keras-seed-style"
KERAS_STEPWISE = "keras-stepwise"
BASELINE_TITLES = {
    SEED_STYLE: "Keras, seed-style (predict per word)",
    KERAS_STEPWISE: "Keras, stepwise (in-process)",
}
# Recipe names are "<format>-<precision>" (export/formats.py); rank them by the schema.
_ORDER = {
    f"{f}-{p}": i for i, (f, p) in enumerate((f, p) for f in MODEL_FORMATS for p in PRECISIONS)
}


def variant_order(variant: str, name: str = "") -> tuple:
    """Sort key: baselines, then by format and precision, then anything else by name."""
    if variant in BASELINE_TITLES:
        return (0, list(BASELINE_TITLES).index(variant), "")
    return (1, _ORDER.get(variant, len(_ORDER)), name)


def _by_variant(entries: list[BundleResult]) -> list[BundleResult]:
    return sorted(entries, key=lambda e: variant_order(e.variant, e.name))


@dataclass(frozen=True)
class TableRow:
    """One baseline or bundle as the tables and plots show it; None: not measured."""

    variant: str
    name: str
    status: str
    bytes: int | None
    quality: Scores | None  # greedy
    ms: float | None  # greedy caption, p50
    per_s: float | None
    beam_ms: float | None
    beam_quality: Scores | None
    cold_s: float | None
    rss_mb: float | None
    speedup: float | None  # times faster than seed-style Keras

    def scene_accuracy(self, beam: bool = False) -> float | None:
        return ((self.beam_quality if beam else self.quality) or {}).get("scene_accuracy")


def table_rows(result: BenchResult) -> list[TableRow]:
    beam = result.beam_key
    out = []
    baselines = result.baselines
    if baselines.ok:
        stepwise, seed = baselines.keras_stepwise, baselines.seed_style
        quality = (stepwise.quality or {}).get("greedy")
        # seed-style picks the stepwise decoder's words (checked on its images)
        same_words = seed.same_caption_as_stepwise == seed.images
        for variant, timing, speedup in (
            (SEED_STYLE, seed, 1.0),
            (KERAS_STEPWISE, stepwise, seed.latency_ms.p50 / stepwise.latency_ms.p50),
        ):
            out.append(TableRow(
                variant=variant, name=BASELINE_TITLES[variant], status="ok",
                bytes=baselines.run_bytes,
                quality=quality if variant == KERAS_STEPWISE or same_words else None,
                ms=timing.latency_ms.p50, per_s=timing.captions_per_s, beam_ms=None,
                beam_quality=None, cold_s=baselines.tf_cold_start.median_s, rss_mb=None,
                speedup=speedup,
            ))  # fmt: skip
    for entry in _by_variant(result.bundles):
        ok = entry.ok
        out.append(TableRow(
            variant=entry.variant, name=entry.name, status=entry.status,
            bytes=entry.size.total_bytes if ok else None,
            quality=entry.quality("greedy"), ms=entry.latency_p50("caption_greedy"),
            per_s=entry.captions_per_s.get("greedy") if ok else None,
            beam_ms=entry.latency_p50(f"caption_{beam}"), beam_quality=entry.quality(beam),
            cold_s=entry.cold_s, rss_mb=entry.peak_rss_mb if ok else None,
            speedup=entry.speedup.caption_vs_seed_style if ok and entry.speedup else None,
        ))  # fmt: skip
    return out


def _num(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _quality_cells(quality: Scores | None) -> list[str]:
    q = quality or {}
    dangling = q.get("dangling_endings")
    return [
        _num(q.get("bleu4"), 3),
        _num(q.get("cider_d"), 3),
        _num(q.get("scene_accuracy"), 3),
        "—" if dangling is None else f"{dangling:.1%}",
    ]


def _status(status: str) -> str:
    return "✅" if status == "ok" else "❌ " + status


def _variant_cell(variant: str, name: str) -> str:
    if variant in BASELINE_TITLES:
        return name
    if name == variant:
        return f"`{variant}`"
    return f"`{variant}` ({name})"


def _speedup(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def main_table(result: BenchResult) -> str:
    """The ultralytics-style table of one device's run."""
    k = result.settings.beam
    header = [
        "variant", "status", "size (MB)", "BLEU-4", "CIDEr-D", "scene acc.", "dangling endings", "ms/caption",
        "captions/s", f"ms/caption beam {k}", f"scene acc. beam {k}", "cold start (s)",
        "peak RSS (MB)", "vs seed-style",
    ]  # fmt: skip
    table = []
    for row in table_rows(result):
        size = row.bytes / 2**20 if row.bytes else None
        cells = [_variant_cell(row.variant, row.name), _status(row.status), _num(size, 2)]
        cells += _quality_cells(row.quality)
        cells += [_num(row.ms, 2), _num(row.per_s, 1), _num(row.beam_ms, 2)]
        cells += [_num(row.scene_accuracy(beam=True), 3)]
        cells += [_num(row.cold_s, 2), _num(row.rss_mb, 0), _speedup(row.speedup)]
        table.append(cells)
    return markdown_table(header, table, text_columns=2)


def _stats(s) -> str:
    return "—" if not s else f"{s.p50:.2f} / {s.p90:.2f} / {s.p99:.2f}"


def _mean(s) -> str:
    return "—" if not s else f"{s.mean:.2f} ± {s.std:.2f}"


def latency_table(result: BenchResult) -> str:
    """p50 / p90 / p99 and mean ± std of every latency, per bundle, in ms, with the backend
    and provider that really ran it."""
    beam = result.beam_key
    header = [
        "variant", "backend", "init", "first caption", "encoder p50/p90/p99",
        "decoder step p50/p90/p99",
        "greedy p50/p90/p99", "greedy mean ± std", f"{beam} p50/p90/p99", f"{beam} mean ± std",
        "samples (greedy)",
    ]  # fmt: skip
    table = []
    for m in _by_variant(result.bundles):
        if not m.ok:
            continue
        greedy, beamed = m.latency_ms["caption_greedy"], m.latency_ms.get(f"caption_{beam}")
        table.append([
            _variant_cell(m.variant, m.name), _backend_cell(m),
            _num(m.init_ms, 1), _num(m.first_caption_ms, 1),
            _stats(m.latency_ms["encoder"]), _stats(m.latency_ms["decoder_step"]),
            _stats(greedy), _mean(greedy), _stats(beamed), _mean(beamed),
            f"{greedy.n} ({greedy.outliers} clipped)",
        ])  # fmt: skip
    return markdown_table(header, table, text_columns=2)


def _backend_cell(entry: MeasuredBundle) -> str:
    """The encoder's backend, and the decoder step's where it differs (--accelerator gpu)."""
    encoder = entry.backend or "—"
    step = (entry.backends or {}).get("decoder_step")
    return encoder if step in (None, encoder) else f"{encoder}; decoder step: {step}"


def ratio_lines(result: BenchResult) -> list[str]:
    """The baselines as ratios, one line each, for the console and the Markdown."""
    baselines = result.baselines
    if not baselines.ok:
        return [f"baselines: {baselines.status}"]
    seed = baselines.seed_style.latency_ms.p50
    stepwise = baselines.keras_stepwise.latency_ms.p50
    tf = baselines.tf_cold_start
    lines = []
    for entry in _by_variant(result.bundles):
        if not entry.ok:
            continue
        ms = entry.latency_p50("caption_greedy")
        speed = entry.speedup
        lines.append(
            f"{entry.variant} greedy caption: {ms:.2f} ms vs seed-style Keras {seed:,.0f} ms "
            f"→ {_speedup(speed and speed.caption_vs_seed_style)} faster; vs Keras stepwise "
            f"{stepwise:.1f} ms → {_speedup(speed and speed.caption_vs_keras_stepwise)}"
        )
        if entry.cold_s is not None and tf and tf.status == "ok":
            lines.append(
                f"{entry.variant} cold start: {entry.cold_s:.2f} s vs import TF + load Keras "
                f"{tf.median_s:.1f} s → {_speedup(speed and speed.cold_start_vs_tf)} faster"
            )
    return lines


def _conditions(result: BenchResult) -> str:  # what Conditions records, as a sentence
    c = result.conditions
    start, end = (c.load_average_start, c.load_average_end) if c else (None, None)
    if not start or not end:
        return ""
    cores = result.fingerprint.cores_logical
    busy = (
        " (other work was running: read the latencies as pessimistic)"
        if max(start[0], end[0]) > 0.5 * cores
        else ""
    )
    return (
        f"Load average (1 min) {start[0]:.1f} at the start and {end[0]:.1f} at the end, "
        f"on {cores} logical cores{busy}; the run took {c.wall_s:.0f} s."
    )


def _threads(result: BenchResult) -> str:
    return result.settings.threads or "backend default"


def markdown(result: BenchResult) -> str:
    """The whole report of one run: fingerprint, main table, latency details, ratios."""
    s = result.settings
    accelerator = s.accelerator + (" (decoder too)" if s.accelerate_decoder else "")
    parts = [
        f"# caption-bench on {result.fingerprint.device}",
        "",
        f"Device: {label(result.fingerprint)}.",
        f"Run {result.created}; threads {_threads(result)}, backend {s.backend}, accelerator "
        f"{accelerator}; latency: "
        f"{s.warmup} warm-up calls, then {s.budget_s} s per measurement; quality on "
        f"{s.quality_images or 'all'} images of {s.data or 'no dataset'} ({s.split}). "
        f"{s.outlier_rule}.",
        _conditions(result),
        "",
        main_table(result),
        "",
        "ms/caption: median end-to-end caption (decoded RGB image → preprocessing → encoder → "
        "greedy decode) at batch 1; captions/s: 1000 ÷ mean ms (after clipping), one at a time; "
        "cold start: a fresh process from start to first caption (`edge_caption`; for Keras: "
        "import TensorFlow and load the run, no caption); vs seed-style: how many times "
        "faster than the seed-style Keras decode. Seed-style quality is the Keras stepwise "
        "decoder's when both chose the same words on every timed image.",
        "",
        "## Latency in detail (ms)",
        "",
        latency_table(result),
        "",
        "## Ratios",
        "",
        *[f"- {line}" for line in ratio_lines(result)],
    ]
    if result.gate:
        failed = result.gate.failed
        verdict = "passed" if not failed else "FAILED: " + ", ".join(failed)
        parts += ["", f"Gate: scene accuracy ≥ {result.gate.min_scene_accuracy}: {verdict}."]
    return "\n".join(parts) + "\n"


# ---- merged results -----------------------------------------------------------------------


def _rows_by_variant(
    results: list[BenchResult], ok_only: bool = False
) -> tuple[list[str], list[dict[str, TableRow]]]:
    """Every variant of these results in table order (colours follow it), and each result's
    rows by variant."""
    tables = [
        {row.variant: row for row in table_rows(r) if row.status == "ok" or not ok_only}
        for r in results
    ]
    variants = sorted({v for t in tables for v in t}, key=lambda v: variant_order(v, v))
    return variants, tables


def merged_markdown(results: list[BenchResult]) -> str:
    """Several devices: their fingerprints, a variant × device comparison, every row."""
    devices = [r.fingerprint.device for r in results]
    lines = ["# caption-bench across devices", "", "## Devices", ""]
    for r in results:
        lines.append(
            f"- **{r.fingerprint.device}**: {label(r.fingerprint)}; threads "
            f"{_threads(r)}, backend {r.settings.backend}; run {r.created}"
        )
    lines += ["", "## ms per caption (greedy, p50) · scene accuracy", ""]
    variants, per_device = _rows_by_variant(results)
    comparison = []
    for variant in variants:
        cells = []
        for table in per_device:
            row = table.get(variant)
            if row is None:
                cells.append("—")
            elif row.status != "ok":
                cells.append("❌")
            else:
                scene = row.scene_accuracy()
                cells.append(_num(row.ms, 2) + (f" · {scene:.3f}" if scene is not None else ""))
        comparison.append([BASELINE_TITLES.get(variant, f"`{variant}`"), *cells])
    lines.append(markdown_table(["variant", *devices], comparison))
    for r in results:
        lines += ["", f"## {r.fingerprint.device}", "", main_table(r)]
        lines += ["", "Latency in detail (ms):", "", latency_table(r)]
    return "\n".join(lines) + "\n"


# ---- plots ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a device or in CI
    import matplotlib.pyplot as plt

    return plt


def _plain_ticks(axis, low: float, high: float) -> None:
    """Log-scale ticks as 0.5, 2, 100 rather than 5x10^-1; minor ticks (2 and 5 of each
    decade) are labelled only where the axis spans few enough decades to fit them."""
    import math

    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    if math.log10(high / low) > 2.5:
        axis.set_minor_formatter(NullFormatter())
        return
    axis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    )


def _quality_metric(results: list[BenchResult]) -> tuple[str, str]:
    for r in results:
        for row in table_rows(r):
            if row.scene_accuracy() is not None:
                return "scene_accuracy", "scene accuracy"
    return "cider_d", "CIDEr-D"


def _save(fig, path: str | Path) -> None:
    from edgecap.edge_runtime.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    _pyplot().close(fig)


def plot_tradeoff(results: list[BenchResult], path: str | Path, title: str) -> bool:
    """Latency (log x) against quality (y), one panel per device: a colour per variant
    (the legend names them); greedy ●, beam ▲, Keras stepwise ■, Keras seed-style ✕.

    Returns False (and writes nothing) when no variant has both a latency and a quality.
    """
    plt = _pyplot()
    key, metric = _quality_metric(results)
    variants, _ = _rows_by_variant(results)
    cmap = plt.get_cmap("tab10")
    colors = {v: cmap(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.5 + 4.5 * len(results), 5.5), sharey=True, squeeze=False
    )
    values, drawn = [], set()
    for ax, result in zip(axes[0], results, strict=True):
        for row in table_rows(result):
            marker = {SEED_STYLE: "X", KERAS_STEPWISE: "s"}.get(row.variant, "o")
            for ms, quality, m in (
                (row.ms, row.quality, marker),
                (row.beam_ms, row.beam_quality, "^"),
            ):
                value = (quality or {}).get(key)
                if ms is None or value is None:
                    continue
                color = colors[row.variant]
                ax.scatter(ms, value, color=color, marker=m, s=70, edgecolor="black", zorder=3)
                values.append(value)
                drawn.add(row.variant)
        ax.set_xscale("log")
        ax.margins(x=0.15)
        _plain_ticks(ax.xaxis, *ax.get_xlim())
        ax.set_xlabel("ms per caption (p50, end to end, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(result.fingerprint.device if len(results) > 1 else title, fontsize=9)
    if not drawn:
        plt.close(fig)
        return False
    # Quantized variants often tie with float: keep a readable span instead of zooming
    # into a 0.001-wide band that would make equal scores look different.
    low, high = min(values), max(values)
    pad = max(0.02 * max(abs(high), 1e-9), (high - low) * 0.15)
    top = high + pad
    if key == "scene_accuracy":
        top = min(top, 1.0 + 0.1 * pad)  # a fraction: nothing to show above 1
    axes[0][0].set_ylim(low - pad, top)
    axes[0][0].set_ylabel(metric)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colors[v], markeredgecolor="black",
                   label=BASELINE_TITLES.get(v, v))
        for v in variants
        if v in drawn
    ]  # fmt: skip
    handles += [
        plt.Line2D([], [], marker=m, linestyle="", color="white", markeredgecolor="black", label=t)
        for m, t in (("o", "greedy"), ("^", results[0].beam_key.replace("beam", "beam ")))
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if len(results) > 1:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return True


def plot_device_bars(results: list[BenchResult], path: str | Path) -> None:
    """Grouped bars per variant, one bar per device: ms per caption and cold start."""
    import numpy as np

    plt = _pyplot()
    variants, tables = _rows_by_variant(results, ok_only=True)
    x = np.arange(len(variants))
    width = 0.8 / max(len(results), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(variants)), 7), sharex=True)
    for d, (result, table) in enumerate(zip(results, tables, strict=True)):
        offset = (d - (len(results) - 1) / 2) * width
        for ax, field in zip(axes, ("ms", "cold_s"), strict=True):
            values = [getattr(table[v], field) if v in table else None for v in variants]
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x + offset, heights, width, label=result.fingerprint.device)
    axes[0].set_ylabel("ms per caption (greedy p50)")
    axes[1].set_ylabel("cold start (s)\nKeras: import TF + load")
    for ax in axes:
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis, *ax.get_ylim())
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[1].set_xticks(x, [BASELINE_TITLES.get(v, v) for v in variants], rotation=30, ha="right")
    axes[0].legend(fontsize=8)
    axes[0].set_title("caption-bench: per device", fontsize=10)
    _save(fig, path)
