"""What the bundles are compared with, measured in the same caption-bench run.

- Seed-style Keras decoding, as the seed's notebooks caption an image: `model.predict` on
  the image for its features, then for every word `model.predict([features, padded
  prefix])` on the *whole* padded prefix, argmax, append. Our lstm/merge training model
  takes {features [1, F], tokens [1, T]} and returns logits [1, T, V]: the next word is
  read at the last real position; blstm takes {features, prefix [1, L]} -> logits [1, V].
  The seed pads with pad_sequences' default ('pre'); we pad after the words ('post'), as
  our models were trained, with the same fixed width, so each call costs the same and the
  words are right. End to end, like the bundles: decoded RGB image -> caption.
- A Keras stepwise decoder in-process: the run's encoder called directly and the same
  greedy_decode over KerasStepModel (train/decoders.py) that evaluation uses.
- Cold starts, each a fresh process timed by the parent from spawn to exit (the OS file
  cache is warmed by one unrecorded run first, on both sides):
  - TensorFlow: `import tensorflow, keras` and load the run's encoder.keras and
    decoder.keras (load_run). It does not even caption an image, which favours Keras;
  - the runtime: `edge_caption --model BUNDLE --source IMAGE`, up to the caption printed.

Everything that imports TensorFlow runs in a child process
(`python -m edgecap.benchmarks.baselines keras|tf-load`), so the benchmark process and the
per-bundle measurements never carry TensorFlow's memory or threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the benchmark process never loads a Keras run
    from PIL import Image

    from edgecap.train.runs import TrainedRun

# What the Keras side ships: its size is the baselines' "size" in the table.
RUN_FILES = ("encoder.keras", "decoder.keras", "vocab.json")
SEED_STYLE_IMAGES = 5  # seed-style captions cost ~0.5 s each on 2 cores: a handful is enough


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


def time_process(command: list[str], repeats: int, env: dict | None = None) -> dict:
    """Wall time of a fresh process, spawn to exit: one unrecorded run to warm the OS file
    cache, then `repeats` recorded runs; the median is the figure reported."""
    runs = []
    last = None
    for i in range(repeats + 1):
        start = time.perf_counter()
        last = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        seconds = time.perf_counter() - start
        if last.returncode != 0:
            return {"status": f"failed: {last_line(last.stderr)}", "command": command}
        if i > 0:
            runs.append(round(seconds, 4))
    return {
        "status": "ok",
        "median_s": round(statistics.median(runs), 4),
        "runs_s": runs,
        "command": command,
        "stdout": last.stdout.strip()[-500:] if last else "",
    }


def runtime_cold_start(
    bundle: str | Path,
    image: str | Path,
    repeats: int,
    backend: str = "auto",
    threads: int | None = None,
    providers: str | None = None,
) -> dict:
    """`edge_caption --model BUNDLE --source IMAGE` in a fresh process: start to caption."""
    command = [sys.executable, "-m", "edgecap.edge_runtime.cli", "--model", str(bundle)]
    command += ["--source", str(image), "--backend", backend]
    if threads:
        command += ["--threads", str(threads)]
    if providers:
        command += ["--providers", providers]
    return time_process(command, repeats, child_env(threads))


def tf_cold_start(run: str | Path, repeats: int, threads: int | None = None) -> dict:
    """`import tensorflow, keras` + load the Keras run, in a fresh process."""
    command = [sys.executable, "-m", "edgecap.benchmarks.baselines", "tf-load", "--run", str(run)]
    result = time_process(command, repeats, child_env(threads))
    if result["status"] == "ok":
        # The child's own split of the last run: import vs load.
        try:
            result.update(json.loads(result.pop("stdout").splitlines()[-1]))
        except (ValueError, IndexError):
            pass
    return result


def keras_baselines(
    run: str | Path,
    out: Path,
    data: str | None,
    split: str,
    budget_s: float,
    warmup: int,
    seed_images: int,
    quality_images: int | None,
    threads: int | None,
) -> dict:
    """Run the seed-style and stepwise Keras baselines in a child process; return its JSON."""
    command = [sys.executable, "-m", "edgecap.benchmarks.baselines", "keras", "--run", str(run)]
    command += ["--out", str(out), "--split", split, "--budget-s", str(budget_s)]
    command += ["--warmup", str(warmup), "--seed-images", str(seed_images)]
    if data:
        command += ["--data", str(data)]
    if quality_images is not None:
        command += ["--quality-images", str(quality_images)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(threads))
    if done.returncode != 0 or not out.is_file():
        return {"status": f"failed: {last_line(done.stderr)}", "run": str(run)}
    return json.loads(out.read_text())


# ---- the child side: these import TensorFlow ---------------------------------------------


def seed_style_caption(run: TrainedRun, image: Image.Image) -> tuple[list[int], int]:
    """Caption one PIL image the seed's way; return (word ids, model.predict calls)."""
    import numpy as np

    from edgecap.edge_runtime.preprocess import preprocess

    cfg, vocab = run.decoder_config, run.vocab
    pixels = preprocess(image, run.preprocessing)[None]  # [1, S, S, 3]
    features = run.encoder.predict(pixels, verbose=0)  # [1, F]
    key = "prefix" if cfg.kind == "blstm" else "tokens"
    words: list[int] = []
    calls = 1
    for _ in range(cfg.max_length + 1):
        prefix = [vocab.start_id, *words]
        padded = np.zeros((1, cfg.prefix_length), dtype=np.int32)  # [1, L]: 0 is padding
        padded[0, : len(prefix)] = prefix
        logits = run.decoder.predict({"features": features, key: padded}, verbose=0)
        calls += 1
        # lstm/merge: [1, L, V], the next word at the last real position; blstm: [1, V].
        next_logits = logits[0, len(prefix) - 1] if logits.ndim == 3 else logits[0]
        token = int(np.argmax(next_logits))
        # The same stopping rule as decoding.greedy_decode: the end token, or max_length words.
        if token == vocab.end_id or len(words) >= cfg.max_length:
            break
        words.append(token)
    return words, calls


def _keras_main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from edgecap.edge_runtime.atomic import write_json_atomic
    from edgecap.edge_runtime.decoding import greedy_decode
    from edgecap.edge_runtime.preprocess import load_image, preprocess
    from edgecap.train.decoders import KerasStepModel, StepModule
    from edgecap.train.runs import load_run

    from .measure import RANDOM_IMAGE_SIDE
    from .timing import captions_per_second, summarize, time_calls

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    run = load_run(args.run)
    load_s = time.perf_counter() - start
    cfg, vocab = run.decoder_config, run.vocab

    dataset = None
    if args.data:
        from edgecap.train.flickr8k import load_dataset

        dataset = load_dataset(args.data)
        ids = dataset.splits[args.split]
        side = run.preprocessing.input_size  # read as load_pixels reads files
        images = [load_image(dataset.image_path(i), min_side=side) for i in ids[:32]]
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        shape = (RANDOM_IMAGE_SIDE, RANDOM_IMAGE_SIDE, 3)  # [H, W, 3] uint8 RGB
        images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(8)]

    steps = KerasStepModel(StepModule(run.decoder, cfg))

    def stepwise(image):
        pixels = preprocess(image, run.preprocessing)[None]  # [1, S, S, 3]
        features = np.asarray(run.encoder(pixels, training=False))  # [1, F]
        return greedy_decode(steps, features, vocab.start_id, vocab.end_id, cfg.max_length)[0]

    n = len(images)
    samples = time_calls(lambda i: stepwise(images[i % n]), args.budget_s, warmup=args.warmup)
    result: dict = {
        "status": "ok",
        "run": str(args.run),
        "decoder_kind": cfg.kind,
        "in_process_import_s": round(import_s, 3),
        "in_process_load_s": round(load_s, 3),
        "run_bytes": sum((Path(args.run) / name).stat().st_size for name in RUN_FILES),
        "keras_stepwise": {
            "latency_ms": summarize(samples).to_json(),
            "captions_per_s": captions_per_second(summarize(samples)),
        },
    }

    # One unrecorded seed-style caption: the first predict() builds Keras' predict function.
    seed_style_caption(run, images[0])
    seed_ms, calls, agree = [], [], 0
    for image in images[: args.seed_images]:
        start = time.perf_counter()
        words, used = seed_style_caption(run, image)
        seed_ms.append((time.perf_counter() - start) * 1e3)
        calls.append(used)
        agree += words == stepwise(image).tokens
    result["seed_style"] = {
        "latency_ms": summarize(seed_ms).to_json(),
        "captions_per_s": captions_per_second(summarize(seed_ms)),
        "images": len(seed_ms),
        "predict_calls_per_caption": round(float(np.mean(calls)), 2),
        # Same model, same greedy rule: the words should be the stepwise decoder's.
        "same_caption_as_stepwise": agree,
    }

    if dataset is not None and args.quality_images != 0:
        from edgecap.edge_runtime.metrics import caption_metrics
        from edgecap.edge_runtime.scenes import scene_accuracy
        from edgecap.edge_runtime.text import normalize_caption
        from edgecap.train.synthetic import load_scenes

        chosen = ids[: args.quality_images] if args.quality_images else ids
        predictions = {
            i: vocab.decode(stepwise(load_image(dataset.image_path(i), min_side=side)).tokens)
            for i in chosen
        }
        refs = {i: [normalize_caption(c) for c in dataset.captions[i]] for i in chosen}
        metrics = caption_metrics(predictions, refs)
        quality = {
            "images": len(chosen),
            "bleu4": round(metrics["bleu4"], 4),
            "cider_d": round(metrics["cider_d"], 4),
        }
        scenes = load_scenes(dataset.root)
        if scenes:
            quality["scene_accuracy"] = round(scene_accuracy(predictions, scenes), 4)
        result["keras_stepwise"]["quality"] = {"greedy": quality}
    write_json_atomic(args.out, result)
    return 0


def _tf_load_main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    imported = time.perf_counter()
    from edgecap.train.runs import load_run

    load_run(args.run)
    done = time.perf_counter()
    print(json.dumps({"import_s": round(imported - start, 3), "load_s": round(done - imported, 3)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecap.benchmarks.baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    keras = sub.add_parser("keras", help="seed-style and stepwise Keras decoding")
    keras.add_argument("--run", required=True)
    keras.add_argument("--out", required=True, type=Path)
    keras.add_argument("--data")
    keras.add_argument("--split", default="test")
    keras.add_argument("--budget-s", type=float, default=2.0)
    keras.add_argument("--warmup", type=int, default=3)
    keras.add_argument("--seed-images", type=int, default=SEED_STYLE_IMAGES)
    keras.add_argument("--quality-images", type=int, default=None)
    keras.add_argument("--threads", type=int, default=None)
    tf_load = sub.add_parser("tf-load", help="import TensorFlow and load the run, then exit")
    tf_load.add_argument("--run", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "keras":
        return _keras_main(args)
    return _tf_load_main(args)


if __name__ == "__main__":
    sys.exit(main())
