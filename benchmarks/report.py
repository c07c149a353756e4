"""Reports of caption-bench results: Markdown tables and PNG plots.

The main table follows ultralytics' benchmark table (format, status, size, metric,
ms per image, FPS): one row per variant, the Keras baselines on top, failed bundles kept
with their reason. Rows are ordered by the manifest schema's formats, then its
precisions, so every table and plot of the project shows the formats in one order.
"""

from __future__ import annotations

from pathlib import Path

from edgecap.edge_runtime.manifest import MODEL_FORMATS, PRECISIONS

from .schema import value_at
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


def variant_order(entry: dict) -> tuple:
    """Sort key: baselines, then by format and precision, then anything else by name."""
    variant = entry.get("variant", "")
    if variant in BASELINE_TITLES:
        return (0, list(BASELINE_TITLES).index(variant), "")
    return (1, _ORDER.get(variant, len(_ORDER)), entry.get("name", ""))


def _num(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def beam_key(result: dict) -> str:
    """'beam3' (or the beam width the run used)."""
    return f"beam{result['settings'].get('beam', 3)}"


def table_rows(result: dict) -> list[dict]:
    """One flat row per baseline and bundle: what the tables and plots show."""
    beam = beam_key(result)
    out = []
    baselines = result.get("baselines") or {}
    if baselines.get("status") == "ok":
        stepwise = baselines["keras_stepwise"]
        seed = baselines["seed_style"]
        quality = value_at(stepwise, "quality", "greedy")
        run_bytes = baselines.get("run_bytes")
        out.append(
            {
                "variant": SEED_STYLE,
                "name": BASELINE_TITLES[SEED_STYLE],
                "status": "ok",
                "bytes": run_bytes,
                # seed-style picks the stepwise decoder's words (checked on its images)
                "quality": quality if seed["same_caption_as_stepwise"] == seed["images"] else None,
                "ms": seed["latency_ms"]["p50"],
                "per_s": seed.get("captions_per_s"),
                "beam_ms": None,
                "beam_quality": None,
                "cold_s": value_at(baselines, "tf_cold_start", "median_s"),
                "rss_mb": None,
                "speedup": 1.0,
            }
        )
        out.append(
            {
                "variant": KERAS_STEPWISE,
                "name": BASELINE_TITLES[KERAS_STEPWISE],
                "status": "ok",
                "bytes": run_bytes,
                "quality": quality,
                "ms": stepwise["latency_ms"]["p50"],
                "per_s": stepwise.get("captions_per_s"),
                "beam_ms": None,
                "beam_quality": None,
                "cold_s": value_at(baselines, "tf_cold_start", "median_s"),
                "rss_mb": None,
                "speedup": _ratio(seed["latency_ms"]["p50"], stepwise["latency_ms"]["p50"]),
            }
        )
    for entry in sorted(result["bundles"], key=variant_order):
        ok = entry["status"] == "ok"
        quality = entry.get("quality") or {}
        latency = entry.get("latency_ms") or {}
        out.append(
            {
                "variant": entry["variant"],
                "name": entry["name"],
                "status": entry["status"],
                "bytes": value_at(entry, "size", "total_bytes"),
                "quality": quality.get("greedy"),
                "ms": latency.get("caption_greedy", {}).get("p50") if ok else None,
                "per_s": value_at(entry, "captions_per_s", "greedy"),
                "beam_ms": latency.get(f"caption_{beam}", {}).get("p50") if ok else None,
                "beam_quality": quality.get(beam),
                "cold_s": value_at(entry, "cold_start", "median_s"),
                "rss_mb": entry.get("peak_rss_mb"),
                "speedup": value_at(entry, "speedup", "caption_vs_seed_style"),
            }
        )
    return out


def _ratio(slow: float | None, fast: float | None) -> float | None:
    if not slow or not fast:
        return None
    return slow / fast


def _quality_cells(quality: dict | None) -> list[str]:
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


def _variant_cell(row: dict) -> str:
    if row["variant"] in BASELINE_TITLES:
        return row["name"]
    if row["name"] == row["variant"]:
        return f"`{row['variant']}`"
    return f"`{row['variant']}` ({row['name']})"


def _speedup(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def main_table(result: dict) -> str:
    """The ultralytics-style table of one device's run."""
    k = result["settings"].get("beam", 3)
    header = [
        "variant", "status", "size (MB)", "BLEU-4", "CIDEr-D", "scene acc.", "dangling endings", "ms/caption",
        "captions/s", f"ms/caption beam {k}", f"scene acc. beam {k}", "cold start (s)",
        "peak RSS (MB)", "vs seed-style",
    ]  # fmt: skip
    table = []
    for row in table_rows(result):
        size = row["bytes"] / 2**20 if row["bytes"] else None
        cells = [_variant_cell(row), _status(row["status"]), _num(size, 2)]
        cells += _quality_cells(row["quality"])
        cells += [_num(row["ms"], 2), _num(row["per_s"], 1), _num(row["beam_ms"], 2)]
        cells += [_num(value_at(row, "beam_quality", "scene_accuracy"), 3)]
        cells += [_num(row["cold_s"], 2), _num(row["rss_mb"], 0), _speedup(row["speedup"])]
        table.append(cells)
    return markdown_table(header, table, text_columns=2)


def _stats(s: dict | None) -> str:
    if not s:
        return "—"
    return f"{s['p50']:.2f} / {s['p90']:.2f} / {s['p99']:.2f}"


def _mean(s: dict | None) -> str:
    return "—" if not s else f"{s['mean']:.2f} ± {s['std']:.2f}"


def latency_table(result: dict) -> str:
    """p50 / p90 / p99 and mean ± std of every latency, per bundle, in ms, with the backend
    and provider that really ran it."""
    beam = beam_key(result)
    header = [
        "variant", "backend", "init", "first caption", "encoder p50/p90/p99",
        "decoder step p50/p90/p99",
        "greedy p50/p90/p99", "greedy mean ± std", f"{beam} p50/p90/p99", f"{beam} mean ± std",
        "samples (greedy)",
    ]  # fmt: skip
    table = []
    for entry in sorted(result["bundles"], key=variant_order):
        if entry["status"] != "ok":
            continue
        lat = entry["latency_ms"]
        greedy, beamed = lat["caption_greedy"], lat.get(f"caption_{beam}")
        cells = [
            _variant_cell({"variant": entry["variant"], "name": entry["name"]}),
            _backend_cell(entry),
            _num(entry["init_ms"], 1),
            _num(entry["first_caption_ms"], 1),
            _stats(lat["encoder"]),
            _stats(lat["decoder_step"]),
            _stats(greedy),
            _mean(greedy),
            _stats(beamed),
            _mean(beamed),
            f"{greedy['n']} ({greedy['outliers']} clipped)",
        ]
        table.append(cells)
    return markdown_table(header, table, text_columns=2)


def _backend_cell(entry: dict) -> str:
    """The encoder's backend, and the decoder step's where it differs (--accelerator gpu)."""
    encoder = entry.get("backend") or "—"
    step = value_at(entry, "backends", "decoder_step")
    return encoder if step in (None, encoder) else f"{encoder}; decoder step: {step}"


def ratio_lines(result: dict) -> list[str]:
    """The baselines as ratios, one line each, for the console and the Markdown."""
    baselines = result.get("baselines") or {}
    if baselines.get("status") != "ok":
        reason = baselines.get("status", "not run")
        return [f"baselines: {reason}"]
    seed = baselines["seed_style"]["latency_ms"]["p50"]
    stepwise = baselines["keras_stepwise"]["latency_ms"]["p50"]
    tf = baselines.get("tf_cold_start") or {}
    lines = []
    for entry in sorted(result["bundles"], key=variant_order):
        if entry["status"] != "ok":
            continue
        ms = entry["latency_ms"]["caption_greedy"]["p50"]
        speed = entry.get("speedup") or {}
        lines.append(
            f"{entry['variant']} greedy caption: {ms:.2f} ms vs seed-style Keras {seed:,.0f} ms "
            f"→ {_speedup(speed.get('caption_vs_seed_style'))} faster; vs Keras stepwise "
            f"{stepwise:.1f} ms → {_speedup(speed.get('caption_vs_keras_stepwise'))}"
        )
        cold = value_at(entry, "cold_start", "median_s")
        if cold is not None and tf.get("status") == "ok":
            lines.append(
                f"{entry['variant']} cold start: {cold:.2f} s vs import TF + load Keras "
                f"{tf['median_s']:.1f} s → {_speedup(speed.get('cold_start_vs_tf'))} faster"
            )
    return lines


def _conditions(result: dict) -> str:
    """The machine's load during the run: other work slows every figure of the table."""
    c = result.get("conditions") or {}
    start, end = c.get("load_average_start"), c.get("load_average_end")
    if not start or not end:
        return ""
    cores = result["fingerprint"]["cores_logical"]
    busy = (
        " (other work was running: read the latencies as pessimistic)"
        if max(start[0], end[0]) > 0.5 * cores
        else ""
    )
    return (
        f"Load average (1 min) {start[0]:.1f} at the start and {end[0]:.1f} at the end, "
        f"on {cores} logical cores{busy}; the run took {c.get('wall_s', 0):.0f} s."
    )


def markdown(result: dict) -> str:
    """The whole report of one run: fingerprint, main table, latency details, ratios."""
    from .fingerprint import label

    s = result["settings"]
    threads = s.get("threads") or "backend default"
    accelerator = s.get("accelerator", "cpu") + (
        " (decoder too)" if s.get("accelerate_decoder") else ""
    )
    quality = s.get("quality_images") or "all"
    parts = [
        f"# caption-bench on {result['fingerprint']['device']}",
        "",
        f"Device: {label(result['fingerprint'])}.",
        f"Run {result['created']}; threads {threads}, backend {s['backend']}, accelerator "
        f"{accelerator}; latency: "
        f"{s['warmup']} warm-up calls, then {s['budget_s']} s per measurement; quality on "
        f"{quality} images of {s.get('data') or 'no dataset'} ({s['split']}). "
        f"{s['outlier_rule']}.",
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
    gate = result.get("gate")
    if gate:
        verdict = "passed" if not gate["failed"] else "FAILED: " + ", ".join(gate["failed"])
        parts += ["", f"Gate: scene accuracy ≥ {gate['min_scene_accuracy']}: {verdict}."]
    return "\n".join(parts) + "\n"


# ---- merged results -----------------------------------------------------------------------


def merged_markdown(results: list[dict]) -> str:
    """Several devices: their fingerprints, a variant × device comparison, every row."""
    from .fingerprint import label

    devices = [r["fingerprint"]["device"] for r in results]
    lines = ["# caption-bench across devices", "", "## Devices", ""]
    for r in results:
        s = r["settings"]
        lines.append(
            f"- **{r['fingerprint']['device']}**: {label(r['fingerprint'])}; threads "
            f"{s.get('threads') or 'backend default'}, backend {s['backend']}; run {r['created']}"
        )
    lines += ["", "## ms per caption (greedy, p50) · scene accuracy", ""]
    per_device = [{row["variant"]: row for row in table_rows(r)} for r in results]
    variants = sorted(
        {v for table in per_device for v in table},
        key=lambda v: variant_order({"variant": v, "name": v}),
    )
    comparison = []
    for variant in variants:
        cells = []
        for table in per_device:
            row = table.get(variant)
            if row is None:
                cells.append("—")
            elif row["status"] != "ok":
                cells.append("❌")
            else:
                scene = value_at(row, "quality", "scene_accuracy")
                cells.append(_num(row["ms"], 2) + (f" · {scene:.3f}" if scene is not None else ""))
        comparison.append([BASELINE_TITLES.get(variant, f"`{variant}`"), *cells])
    lines.append(markdown_table(["variant", *devices], comparison))
    for r in results:
        lines += ["", f"## {r['fingerprint']['device']}", "", main_table(r)]
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


def _quality_metric(results: list[dict]) -> tuple[str, str]:
    for r in results:
        for row in table_rows(r):
            if value_at(row, "quality", "scene_accuracy") is not None:
                return "scene_accuracy", "scene accuracy"
    return "cider_d", "CIDEr-D"


def _variants(results: list[dict]) -> list[str]:
    """Every variant of these results, in table order (colours follow this order)."""
    found = {row["variant"] for r in results for row in table_rows(r)}
    return sorted(found, key=lambda v: variant_order({"variant": v, "name": v}))


def plot_tradeoff(results: list[dict], path: str | Path, title: str) -> bool:
    """Latency (log x) against quality (y), one panel per device: a colour per variant
    (the legend names them); greedy ●, beam ▲, Keras stepwise ■, Keras seed-style ✕.

    Returns False (and writes nothing) when no variant has both a latency and a quality.
    """
    from edgecap.edge_runtime.atomic import atomic_path

    plt = _pyplot()
    key, metric = _quality_metric(results)
    variants = _variants(results)
    cmap = plt.get_cmap("tab10")
    colors = {v: cmap(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.5 + 4.5 * len(results), 5.5), sharey=True, squeeze=False
    )
    values, drawn = [], set()
    for ax, result in zip(axes[0], results, strict=True):
        for row in table_rows(result):
            marker = {SEED_STYLE: "X", KERAS_STEPWISE: "s"}.get(row["variant"], "o")
            for ms, quality, m in (
                (row["ms"], row["quality"], marker),
                (row["beam_ms"], row["beam_quality"], "^"),
            ):
                value = value_at(quality, key)
                if ms is None or value is None:
                    continue
                color = colors[row["variant"]]
                ax.scatter(ms, value, color=color, marker=m, s=70, edgecolor="black", zorder=3)
                values.append(value)
                drawn.add(row["variant"])
        ax.set_xscale("log")
        ax.margins(x=0.15)
        _plain_ticks(ax.xaxis, *ax.get_xlim())
        ax.set_xlabel("ms per caption (p50, end to end, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(result["fingerprint"]["device"] if len(results) > 1 else title, fontsize=9)
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
        for m, t in (("o", "greedy"), ("^", beam_key(results[0]).replace("beam", "beam ")))
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if len(results) > 1:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return True


def plot_device_bars(results: list[dict], path: str | Path) -> None:
    """Grouped bars per variant, one bar per device: ms per caption and cold start."""
    import numpy as np

    from edgecap.edge_runtime.atomic import atomic_path

    plt = _pyplot()
    tables = [
        {row["variant"]: row for row in table_rows(r) if row["status"] == "ok"} for r in results
    ]
    variants = sorted(
        {v for t in tables for v in t}, key=lambda v: variant_order({"variant": v, "name": v})
    )
    x = np.arange(len(variants))
    width = 0.8 / max(len(results), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(variants)), 7), sharex=True)
    for d, (result, table) in enumerate(zip(results, tables, strict=True)):
        offset = (d - (len(results) - 1) / 2) * width
        for ax, field in zip(axes, ("ms", "cold_s"), strict=True):
            values = [value_at(table, v, field) for v in variants]
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x + offset, heights, width, label=result["fingerprint"]["device"])
    axes[0].set_ylabel("ms per caption (greedy p50)")
    axes[1].set_ylabel("cold start (s)\nKeras: import TF + load")
    for ax in axes:
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis, *ax.get_ylim())
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[1].set_xticks(x, [BASELINE_TITLES.get(v, v) for v in variants], rotation=30, ha="right")
    axes[0].legend(fontsize=8)
    axes[0].set_title("caption-bench: per device", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
