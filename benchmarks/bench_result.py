"""The results file of `caption-bench`, typed: its name, version, rows, and how it is read.

`caption-bench merge` compares files written on different devices, possibly by different
versions of the tool; a field that changed meaning between versions would silently make
the comparison wrong, so a file of another schema version is refused, naming the file.
Bump SCHEMA_VERSION whenever a field is renamed, removed, or changes unit or meaning.
Fields added since version 1 was first written have defaults, so older files still load.
Serialized by edge_runtime/schema.py: a None whose field defaults to None is left out
(json_field(keep_none=True) writes it as null), so each class lays its keys out as the
file has them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.evaluation.timing import LatencyStats
from edgecap.edge_runtime.schema import from_json, json_field


class SchemaError(EdgeCaptionError):
    """A results file is not a caption-bench results file this version can read."""


SCHEMA = "edgecap-bench"
SCHEMA_VERSION = 1
Scores = dict[str, float]  # a Scores.to_json(): metric name -> value, absent metrics left out


@dataclass(kw_only=True)
class Fingerprint:
    """What ran, on what (benchmarks/fingerprint.py)."""

    device: str
    cpu_model: str
    cores_logical: int
    cores_physical: int | None = json_field(default=None, keep_none=True)
    # the cores this process may run on
    cores_available: int | None = json_field(default=None, keep_none=True)
    arch: str
    os: str
    os_release: str | None = json_field(default=None, keep_none=True)
    python: str
    memory_mb: int | None = json_field(default=None, keep_none=True)
    runtimes: dict[str, str | None]  # runtime -> installed version, None where absent


@dataclass(kw_only=True)
class Conditions:
    """The machine's load during the run: other work slows every figure."""

    load_average_start: list[float] | None
    load_average_end: list[float] | None
    wall_s: float


@dataclass(kw_only=True)
class Settings:
    threads: int | None
    backend: str
    providers: str | None
    accelerator: str = "cpu"
    accelerate_decoder: bool = False
    budget_s: float
    warmup: int
    beam: int
    cold_repeats: int
    seed_images: int
    data: str | None
    split: str
    quality_images: int | None
    outlier_rule: str
    batch: int = 1


@dataclass(kw_only=True)
class ColdStart:
    """A fresh process timed from spawn to exit; a failed one keeps its command."""

    status: str
    median_s: float | None = None
    runs_s: list[float] | None = None
    command: list[str]
    # TensorFlow's only: the child's own split of its last run.
    import_s: float | None = None
    load_s: float | None = None


@dataclass(kw_only=True)
class BundleSize:
    total_bytes: int
    files: dict[str, int]


@dataclass(kw_only=True)
class Speedup:
    """How many times faster a bundle is than the Keras baselines."""

    caption_vs_seed_style: float
    caption_vs_keras_stepwise: float
    cold_start_vs_tf: float | None
    # A ratio against another model than the bundle's own would be a different claim.
    baseline_is_source_run: bool


@dataclass(kw_only=True)
class BundleResult:
    """A bundle's row: only this when it could not be measured (status says why)."""

    name: str
    path: str
    variant: str
    format: str | None
    precision: str | None
    status: str

    def __post_init__(self) -> None:
        if self.status == "ok" and not isinstance(self, MeasuredBundle):
            raise ValueError("status 'ok' but no measurements")

    @property
    def ok(self) -> bool:
        return isinstance(self, MeasuredBundle)

    def latency_p50(self, loop: str) -> float | None:
        """The median ms of one latency loop ('caption_greedy', ...); None if not measured."""
        return None

    def quality(self, decode: str = "greedy") -> Scores | None:
        return None

    @property
    def cold_s(self) -> float | None:
        return None


@dataclass(kw_only=True)
class MeasuredBundle(BundleResult):
    """What benchmarks/measure.py measures of a bundle that opened, and what bench.py adds."""

    backend: str
    backends: dict[str, str] | None = None  # per model: the decoder may run elsewhere
    # 'xnnpack', 'none' (the built-in kernels: slower, captions may differ), 'gpu';
    # None for ONNX, whose providers say it
    delegate: str | None = json_field(default=None, keep_none=True)
    delegates: dict[str, str | None] | None = None
    threads: int | None
    providers: list[str] | None
    decoder_kind: str
    source_run: str | None
    size: BundleSize
    import_ms: float
    init_ms: float
    first_caption_ms: float
    latency_ms: dict[str, LatencyStats]  # encoder, decoder_step, caption_greedy, caption_beamK
    captions_per_s: dict[str, float]  # greedy, beamK
    quality_by_decode: dict[str, Scores] | None = json_field(key="quality", keep_none=True)
    peak_rss_mb: float
    rss_method: str
    cold_start: ColdStart | None = None
    speedup: Speedup | None = None

    def latency_p50(self, loop: str) -> float | None:
        stats = self.latency_ms.get(loop)
        return stats.p50 if stats else None

    def quality(self, decode: str = "greedy") -> Scores | None:
        return (self.quality_by_decode or {}).get(decode)

    @property
    def cold_s(self) -> float | None:
        return self.cold_start.median_s if self.cold_start else None


@dataclass(kw_only=True)
class KerasTiming:
    latency_ms: LatencyStats
    captions_per_s: float
    quality: dict[str, Scores] | None = None


@dataclass(kw_only=True)
class SeedStyleTiming(KerasTiming):
    images: int
    predict_calls_per_caption: float
    same_caption_as_stepwise: int  # of `images`: the seed-style words equal the stepwise ones


@dataclass(kw_only=True)
class Baselines:
    """The Keras baselines (train/baselines.py writes all but status' verdict and the cold
    start); a skipped or failed one has only its status, and the run where there was one."""

    status: str
    run: str | None = None
    decoder_kind: str | None = None
    in_process_import_s: float | None = None
    in_process_load_s: float | None = None
    run_bytes: int | None = None
    keras_stepwise: KerasTiming | None = None
    seed_style: SeedStyleTiming | None = None
    tf_cold_start: ColdStart | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(kw_only=True)
class Gate:
    min_scene_accuracy: float
    failed: list[str]  # "PATH: reason" per bundle below the threshold


@dataclass(kw_only=True)
class BenchResult:
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    created: str
    argv: list[str]
    fingerprint: Fingerprint
    conditions: Conditions | None = None
    settings: Settings
    # A measured row first: a failed one is read as the plain BundleResult it is.
    bundles: list[MeasuredBundle | BundleResult]
    baselines: Baselines
    gate: Gate | None = None

    @property
    def beam_key(self) -> str:
        """'beam3' (or the beam width the run used)."""
        return f"beam{self.settings.beam}"


def portable(value: Any, cwd: str | os.PathLike | None = None, home: str | None = None) -> Any:
    """`value` (a results dict, list or string) with the measuring machine's absolute paths
    taken out, so that a results file can be committed and compared: a path under the
    working directory becomes relative to it, one under the home folder `~/...`, a Python
    interpreter `python`, and any other `.../NAME` (its last component names the bundle or
    file; the folders above it are of that machine only). `--flag=/abs` arguments too.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    home = os.path.expanduser("~") if home is None else home

    def path(text: str) -> str:
        if "=" in text and text.startswith("--"):  # --out=/abs/path
            flag, _, rest = text.partition("=")
            return f"{flag}={path(rest)}"
        if not os.path.isabs(text) or "\n" in text:
            return text
        text = os.path.normpath(text)
        name = os.path.basename(text)
        if name.startswith("python") and os.path.basename(os.path.dirname(text)) == "bin":
            return "python"
        for root, shown in ((cwd, None), (home, "~")):
            if root not in ("", os.sep) and os.path.commonpath([text, root]) == root:
                relative = os.path.relpath(text, root)
                if shown is None:
                    return relative
                return shown if relative == "." else f"{shown}/{relative}"
        return f".../{name}" if name else text

    if isinstance(value, str):
        return path(value)
    if isinstance(value, dict):
        return {k: portable(v, cwd, home) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, cwd, home) for v in value]
    return value


def schema_version_message(source: str, version: Any) -> str:
    """The one message for a file of another schema version (tests check it word for word)."""
    return (
        f"{source}: results schema version {version!r} is not supported; this caption-bench "
        f"reads version {SCHEMA_VERSION}. Rerun caption-bench on that device with this version"
    )


def validate(obj: Any, source: str) -> BenchResult:
    """Decoded results read into a BenchResult, or SchemaError naming `source`."""
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise SchemaError(f"{source}: not a caption-bench results file (no 'schema': {SCHEMA!r})")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(schema_version_message(source, obj.get("schema_version")))
    bundles = obj.get("bundles")
    for i, row in enumerate(bundles if isinstance(bundles, list) else []):
        # Each row read as what its status says it is: the union in BenchResult would only
        # say "expected an object or an object" of a broken one.
        measured = isinstance(row, dict) and row.get("status") == "ok"
        row_type = MeasuredBundle if measured else BundleResult
        from_json(row_type, row, source, error=SchemaError, path=f"bundles[{i}]")
    return from_json(BenchResult, obj, source, error=SchemaError)


def load_results(path: str | os.PathLike) -> tuple[dict, BenchResult]:
    """One results file as written (merge copies it as it is) and read into a BenchResult."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: results file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc})") from None
    return obj, validate(obj, str(path))
