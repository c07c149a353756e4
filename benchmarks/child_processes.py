"""What the bundles are compared with, measured in the same caption-bench run.

- Seed-style Keras decoding, as the seed's notebooks caption an image: `model.predict` on
  the *whole* padded prefix for every word (train/baselines.py's seed_style_caption).
  End to end, like the bundles: decoded RGB image -> caption.
- A Keras stepwise decoder in-process: the run's encoder called directly and the same
  greedy_decode over KerasStepModel (train/decoders.py) that evaluation uses.
- Cold starts (time_process): TensorFlow's import and load_run, which does not even
  caption an image and so favours Keras, against `edge_caption` up to its caption.

Everything that imports TensorFlow runs in a child process of train/
(`python -m edgecap.train.baselines keras|tf-load`), so the benchmark process and the
per-bundle measurements never carry TensorFlow's memory or threads, and benchmarks/
imports edge_runtime only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgecap.edge_runtime.schema import from_json

from .bench_result import Baselines, ColdStart, SchemaError, Settings

if TYPE_CHECKING:
    from edgecap.edge_runtime.bundle import RuntimeOptions

SEED_STYLE_IMAGES = 5  # the slowest row of docs/benchmarks.md by far: a handful is enough


def child_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a child process: TensorFlow's C++ logs quiet, thread pools capped."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads:
        # Keep OpenMP/MKL pools (numpy, TF's oneDNN) at the thread count asked for.
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def last_line(text: str) -> str:
    """The last non-empty line of a child's stderr: the reason it gives for failing."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def run_child(command: list[str], out: Path, env: dict, timeout: float | None = None) -> dict | str:
    """Run a child that writes its result to `out` as JSON: that result, or why there is none
    (the child's last word on stderr, or the timeout: a hung backend must not hang the run)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    return json.loads(out.read_text()) if out.is_file() else last_line(done.stderr)


def time_process(
    command: list[str], repeats: int, env: dict | None = None
) -> tuple[ColdStart, str]:
    """Wall time of a fresh process, spawn to exit: one unrecorded run to warm the OS file
    cache, then `repeats` recorded runs; the median is the figure reported. Also returns
    the last run's stdout."""
    runs = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        last = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        seconds = time.perf_counter() - start
        if last.returncode != 0:
            return ColdStart(status=f"failed: {last_line(last.stderr)}", command=command), ""
        if i > 0:
            runs.append(round(seconds, 4))
    median = round(statistics.median(runs), 4)
    return ColdStart(status="ok", median_s=median, runs_s=runs, command=command), last.stdout


def runtime_cold_start(
    bundle: str | Path, image: str | Path, repeats: int, runtime: RuntimeOptions
) -> ColdStart:
    """`edge_caption --model BUNDLE --source IMAGE` in a fresh process: start to caption,
    run with caption-bench's runtime options (backend, threads, providers, accelerator)."""
    command = [sys.executable, "-m", "edgecap.edge_runtime.cli", "--model", str(bundle)]
    command += ["--source", str(image), *runtime.to_argv()]
    return time_process(command, repeats, child_env(runtime.num_threads))[0]


def tf_cold_start(run: str | Path, repeats: int, threads: int | None = None) -> ColdStart:
    """`import tensorflow, keras` + load the Keras run, in a fresh process."""
    command = [sys.executable, "-m", "edgecap.train.baselines", "tf-load", "--run", str(run)]
    result, stdout = time_process(command, repeats, child_env(threads))
    if result.status == "ok":
        # The child's own split of the last run: import vs load.
        try:
            split = json.loads(stdout.strip().splitlines()[-1])
            result.import_s, result.load_s = split["import_s"], split["load_s"]
        except (ValueError, IndexError, KeyError):
            pass
    return result


def keras_baselines(run: str | Path, out: Path, settings: Settings) -> Baselines:
    """Run the seed-style and stepwise Keras baselines in a child process; return its JSON."""
    s = settings
    command = [sys.executable, "-m", "edgecap.train.baselines", "keras", "--run", str(run)]
    command += ["--out", str(out), "--split", s.split, "--budget-s", str(s.budget_s)]
    command += ["--warmup", str(min(s.warmup, 3)), "--seed-images", str(s.seed_images)]
    if s.data:
        command += ["--data", str(s.data)]
    if s.quality_images is not None:
        command += ["--quality-images", str(s.quality_images)]
    if s.threads:
        command += ["--threads", str(s.threads)]
    result = run_child(command, out, child_env(s.threads))
    if isinstance(result, str):
        return Baselines(status=f"failed: {result}", run=str(run))
    return from_json(Baselines, result, str(out), error=SchemaError)
