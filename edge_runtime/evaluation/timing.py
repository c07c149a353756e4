"""Latency measurement: warm-up, then a time budget, then robust statistics. It lives in
edge_runtime's evaluation room because caption-bench and the Keras baselines (a child
process of train/) both time with it; a device never imports it.

The rule, stated once so every number in a report means the same thing:

- Warm-up calls run first and are not recorded (first calls pay for lazy allocation,
  kernel selection and cold caches; `init` and `first inference` report those separately).
- Then the function runs until the time budget is spent, and at least `min_samples` times.
- p50 / p90 / p99 are percentiles of *all* recorded samples (numpy's linear
  interpolation): the tail is what a user feels, so it is never clipped away.
- mean ± std are computed after dropping outliers beyond Tukey's fences, that is below
  Q1 - 1.5 IQR or above Q3 + 1.5 IQR (std with ddof=1). A single descheduled call on a
  busy machine would otherwise dominate the mean; how many were dropped is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

TUKEY_K = 1.5
RANDOM_IMAGE_SIDE = 224  # without a dataset, latency runs on seeded random images of this side
OUTLIER_RULE = (
    "percentiles over all samples; mean and std after dropping samples beyond "
    f"Tukey's fences (Q1 - {TUKEY_K} IQR, Q3 + {TUKEY_K} IQR)"
)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one latency measurement, in milliseconds."""

    n: int  # recorded samples
    p50: float
    p90: float
    p99: float
    mean: float  # after outlier clipping
    std: float  # after outlier clipping, ddof=1 (0 for a single sample)
    min: float
    max: float
    outliers: int  # samples outside the fences, left out of mean and std

    def to_json(self, digits: int = 4) -> dict:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


def captions_per_second(stats: LatencyStats) -> float:
    """Steady sequential throughput, one caption at a time: 1000 / (mean ms after clipping).

    From the clipped mean rather than from raw time spent, so that one descheduled call on
    a busy machine does not halve it, and so that it agrees with the latency columns.
    """
    return round(1e3 / stats.mean, 2)


def tukey_fences(samples: np.ndarray, k: float = TUKEY_K) -> tuple[float, float]:
    """(low, high): samples outside this closed range are outliers."""
    q1, q3 = np.percentile(samples, [25, 75])
    iqr = q3 - q1
    return float(q1 - k * iqr), float(q3 + k * iqr)


def summarize(samples_ms: list[float] | np.ndarray) -> LatencyStats:
    """Percentiles of all samples, and mean ± std of the samples inside Tukey's fences."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("need at least one latency sample")
    if not np.all(np.isfinite(values)):
        raise ValueError("latency samples must be finite")
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    low, high = tukey_fences(values)
    kept = values[(values >= low) & (values <= high)]
    # kept is never empty: the median always lies inside the fences
    std = float(np.std(kept, ddof=1)) if kept.size > 1 else 0.0
    return LatencyStats(
        n=int(values.size),
        p50=p50,
        p90=p90,
        p99=p99,
        mean=float(np.mean(kept)),
        std=std,
        min=float(values.min()),
        max=float(values.max()),
        outliers=int(values.size - kept.size),
    )


def time_calls(
    fn: Callable[[int], object],
    budget_s: float,
    warmup: int = 3,
    min_samples: int = 5,
    max_samples: int = 1_000_000,
) -> list[float]:
    """Call `fn(i)` `warmup` times unrecorded, then until `budget_s` is spent (and at least
    `min_samples` times); return each recorded call's duration in milliseconds.

    `i` counts calls from 0 (warm-up included), so callers can cycle through inputs.
    """
    if budget_s < 0 or warmup < 0 or min_samples < 1:
        raise ValueError("budget_s and warmup must be >= 0 and min_samples >= 1")
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    i = warmup
    while len(samples) < max_samples and (len(samples) < min_samples or clock() < deadline):
        start = clock()
        fn(i)
        samples.append((clock() - start) / 1e6)
        i += 1
    return samples


def latency_images(dataset, split: str | None, count: int = 32, min_side: int | None = None):
    """The first `count` images of the split (load_image's, `min_side` passed on), or
    without a dataset up to 8 seeded random ones: what caption-bench's loops and the Keras
    baselines cycle through, so that both time the same images."""
    from PIL import Image

    from ..preprocess import load_image

    if dataset is not None:
        ids = dataset.splits[split][:count]
        return [load_image(dataset.image_path(i), min_side=min_side) for i in ids]
    rng = np.random.default_rng(0)
    shape = (RANDOM_IMAGE_SIDE, RANDOM_IMAGE_SIDE, 3)  # [H, W, 3] uint8 RGB
    return [
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(min(count, 8))
    ]
