"""The child side of caption-bench's Keras baselines: these import TensorFlow, so they run
in a process of their own (`python -m edgecap.train.baselines keras|tf-load`), started by
benchmarks/child_processes.py, which describes what each one measures.

- seed-style: the seed's notebooks' way to caption, `model.predict` on the whole padded
  prefix for every word;
- stepwise: the run's KerasCaptioner, the same decoding evaluation and export parity use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .runs import TrainedRun

# What the Keras side ships: its size is the baselines' "size" in the table.
RUN_FILES = ("encoder.keras", "decoder.keras", "vocab.json")
# Seed-style captions are the slowest figure of the benchmark by far (docs/benchmarks.md,
# "Figures behind the runtime's choices"): a handful is enough.
SEED_STYLE_IMAGES = 5


def seed_style_caption(run: TrainedRun, image: Image.Image) -> tuple[list[int], int]:
    """Caption one PIL image the seed's way; return (word ids, model.predict calls).

    `model.predict` on the image for its features, then for every word `model.predict`
    on the *whole* padded prefix, argmax, append. Our lstm/merge training model takes
    {features [1, F], tokens [1, T]} and returns logits [1, T, V]: the next word is read at
    the last real position; blstm takes {features, prefix [1, L]} -> logits [1, V]. The
    seed pads with pad_sequences' default ('pre'); we pad after the words ('post'), as our
    models were trained, with the same fixed width, so each call costs the same and the
    words are right.
    """
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
        if cfg.kind == "twoway":
            # The left-to-right half's caption; each call still runs both LSTMs, the
            # right-to-left one over padding, so the call costs what a twoway call does.
            padded = np.concatenate([padded, np.zeros_like(padded)], axis=1)  # [1, 2L]
        logits = run.decoder.predict({"features": features, key: padded}, verbose=0)
        calls += 1
        # lstm/merge: [1, L, V] (twoway [1, 2L, V]), the next word at the last real
        # position; blstm: [1, V].
        next_logits = logits[0, len(prefix) - 1] if logits.ndim == 3 else logits[0]
        token = int(np.argmax(next_logits))
        # The same stopping rule as decoding.greedy_decode: the end token, or max_length words.
        if token == vocab.end_id or len(words) >= cfg.max_length:
            break
        words.append(token)
    return words, calls


def _keras_main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from edgecap.edge_runtime.atomic import write_json_atomic
    from edgecap.edge_runtime.evaluation.timing import (
        captions_per_second,
        latency_images,
        summarize,
        time_calls,
    )

    from .keras_captioner import KerasCaptioner
    from .runs import load_run

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    run = load_run(args.run)
    load_s = time.perf_counter() - start
    dataset = None
    if args.data:
        from edgecap.edge_runtime.evaluation.datasets import load_dataset

        dataset = load_dataset(args.data)
    # Read as load_pixels reads files: reduced to the encoder's input side.
    images = latency_images(dataset, args.split, min_side=run.preprocessing.input_size)
    keras_captioner = KerasCaptioner.open(run)

    n = len(images)
    stepwise = summarize(
        time_calls(
            lambda i: keras_captioner.caption(images[i % n]), args.budget_s, warmup=args.warmup
        )
    )
    result: dict = {
        "status": "ok",
        "run": str(args.run),
        "decoder_kind": run.decoder_config.kind,
        "in_process_import_s": round(import_s, 3),
        "in_process_load_s": round(load_s, 3),
        "run_bytes": sum((Path(args.run) / name).stat().st_size for name in RUN_FILES),
        "keras_stepwise": {
            "latency_ms": stepwise.to_json(),
            "captions_per_s": captions_per_second(stepwise),
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
        agree += words == keras_captioner.caption(image).tokens
    seed = summarize(seed_ms)
    result["seed_style"] = {
        "latency_ms": seed.to_json(),
        "captions_per_s": captions_per_second(seed),
        "images": len(seed_ms),
        "predict_calls_per_caption": round(float(np.mean(calls)), 2),
        # Same model, same greedy rule: the words should be the stepwise decoder's.
        "same_caption_as_stepwise": agree,
    }

    if dataset is not None and args.quality_images != 0:
        from edgecap.edge_runtime.evaluation.metrics import caption_split, score_split

        ids = dataset.splits[args.split]
        chosen = ids[: args.quality_images] if args.quality_images else ids
        predictions = caption_split(keras_captioner, dataset, chosen)
        quality = score_split(dataset, args.split, predictions)
        result["keras_stepwise"]["quality"] = {"greedy": quality.to_json()}
    write_json_atomic(args.out, result)
    return 0


def _tf_load_main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    imported = time.perf_counter()
    from .runs import load_run

    load_run(args.run)
    done = time.perf_counter()
    print(json.dumps({"import_s": round(imported - start, 3), "load_s": round(done - imported, 3)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecap.train.baselines")
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
