"""Encoder features, computed once per (dataset, split, encoder, weights) and cached.

Extraction writes shards atomically and skips the shards it already has, so a killed run
resumes where it stopped and never leaves a half-written cache file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import atomic_path, sha256_file, write_json_atomic
from edgecap.edge_runtime.errors import named_write_failures
from edgecap.edge_runtime.evaluation.datasets import CaptionDataset
from edgecap.edge_runtime.preprocess import Preprocessing, load_pixels

from .encoders import EncoderSpec

log = logging.getLogger(__name__)

SHARD_SIZE = 256  # images per shard: the most work a kill can lose


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-caption" / "features"


# Bumped whenever load_pixels reads a file differently: 2 = JPEGs decoded at reduced size
# (draft mode); 3 = long sides shrunk by whole factors before the filter (reducing_gap).
# Images under twice the input size read exactly as in rule 1. The resize rule ("area" since
# 2026-12-04) is keyed on its own in cache_key.
PIXEL_RULE = 3


def cache_key(
    dataset: CaptionDataset,
    split: str,
    spec: EncoderSpec,
    weights: str,
    spatial: bool = False,
    prep: Preprocessing | None = None,
) -> str:
    """Changes whenever the images, the split, the encoder or its weights change, and
    between an encoder's pooled features and its feature map (`spatial`), and with the
    resize rule of `prep` (default: the encoder's own preprocessing).

    `weights` is "imagenet" or a file; random weights are saved to a file first (the run's
    encoder.keras), so that they have a hash too. Images are keyed by their bytes, not by
    size and mtime: a copy or a fresh mount of the same photos keeps its cache (hashing
    Flickr8k's 8,000 224 px JPEGs takes about a second).
    """
    digest = hashlib.sha256()
    digest.update(
        json.dumps([spec.name, spec.input_size, weights == "imagenet", PIXEL_RULE]).encode()
    )
    if weights != "imagenet":
        digest.update(sha256_file(weights).encode())
    if spatial:  # pooled features keep the keys they always had
        digest.update(b"feature map")
    resize = (prep or spec.preprocessing).resize
    if resize != "bilinear":  # so do features resized with PIL's bilinear, the first rule
        digest.update(f"resize {resize}".encode())
    for image_id in dataset.splits[split]:
        digest.update(f"{image_id}\0{sha256_file(dataset.image_path(image_id))}\n".encode())
    return digest.hexdigest()[:16]


def extract_features(
    dataset: CaptionDataset,
    split: str,
    spec: EncoderSpec,
    weights: str,
    encoder,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    worker: tuple[int, int] | None = None,
    prep: Preprocessing | None = None,
) -> np.ndarray | None:
    """Features [N, F] of every image of `split`, in split order; [N, P, F] when the
    encoder gives a feature map (build_encoder(..., spatial=True)), cached apart.

    `worker=(i, n)` makes this one of n workers (`caption-train extract --shard i/n`): it
    computes only the shards k with k % n == i, writes them, and returns None. Whoever
    then asks for the features without `worker` (training, or the last extract) finds
    every shard and only concatenates them, bit for bit what one worker would have made.

    `prep` is how images become pixels (default `spec.preprocessing`); a trained run passes
    its own, recorded in its config, so that its features are read as it was trained.
    """
    prep = prep or spec.preprocessing
    spatial = len(getattr(encoder, "output_shape", ())) == 3  # [B, P, F]
    key = cache_key(dataset, split, spec, weights, spatial, prep)
    name = f"{spec.name}-map" if spatial else spec.name
    folder = Path(cache_dir or default_cache_dir()) / f"{name}-{split}-{key}"
    final = folder / "features.npy"
    ids = dataset.splits[split]
    cached = _load_rows(final, len(ids))
    if cached is not None:
        log.info("features for %s/%s from cache %s", spec.name, split, final)
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    shards = [ids[i : i + SHARD_SIZE] for i in range(0, len(ids), SHARD_SIZE)]
    parts: list[np.ndarray | None] = [
        _load_rows(folder / f"shard_{k:05d}.npy", len(shard)) for k, shard in enumerate(shards)
    ]
    done = sum(part is not None for part in parts)
    if done:
        log.info(
            "resuming feature extraction: %d of %d shards already in %s", done, len(shards), folder
        )
    mine = [k for k in range(len(shards)) if worker is None or k % worker[1] == worker[0]]
    total = sum(len(shards[k]) for k in mine)
    kept = sum(len(shards[k]) for k in mine if parts[k] is not None)
    label = f"features {split}" + (f" (worker {worker[0]}/{worker[1]})" if worker else "")
    bar = _bar(total, label, progress, initial=kept)
    compiled = graph_encoder(encoder)
    try:
        for k in mine:
            shard = shards[k]
            if parts[k] is not None:
                continue
            shard_file = folder / f"shard_{k:05d}.npy"
            parts[k] = _compute(dataset, shard, prep, compiled, batch_size)
            _save_npy(shard_file, parts[k])
            if bar is not None:
                bar.update(len(shard))
    finally:
        # Closed before an error propagates, so the bar does not redraw itself under the
        # CLI's error message when it is garbage-collected at exit.
        if bar is not None:
            bar.close()
    if worker is not None:
        return None
    features = np.concatenate(parts, axis=0)  # [N, F] or [N, P, F]
    _save_npy(final, features)
    with named_write_failures(folder / "info.json", RESUME_ADVICE):
        write_json_atomic(
            folder / "info.json",
            {
                "encoder": spec.name,
                "split": split,
                "images": len(ids),
                "dataset": str(dataset.root),
            },
        )
    for k in range(len(shards)):
        (folder / f"shard_{k:05d}.npy").unlink(missing_ok=True)
    return features


def graph_encoder(encoder):
    """A Keras encoder as one traced tf.function (anything else, e.g. a test's stand-in, as
    it is).

    Called eagerly, a Keras model keeps the buffers of every intermediate activation
    around: MobileNetV2 at 224 px in batches of 64 peaked at 6.9 GB resident where the
    traced function peaks at 1.6 GB, and runs twice as fast (640 Flickr8k photos, 2 cores).
    """
    import keras

    if not isinstance(encoder, keras.Model):
        return encoder
    import tensorflow as tf

    # The last batch of a split is smaller: one more trace, then a batch dimension of None.
    traced = tf.function(lambda batch: encoder(batch, training=False), reduce_retracing=True)
    return lambda batch, training=False: traced(batch)


def _load_rows(path: Path, rows: int) -> np.ndarray | None:
    """A cached array with `rows` rows, or None if it is absent or unusable.

    Writes are atomic, so a file is whole or absent; but one from an older SHARD_SIZE, or
    damaged on disk, must be recomputed, never silently concatenated.
    """
    if not path.exists():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("%s is unreadable (%s); computing it again", path, exc)
        return None
    if array.ndim not in (2, 3) or len(array) != rows:
        log.warning(
            "%s holds %s features, expected %d rows; computing it again", path, array.shape, rows
        )
        return None
    return array


# What to do after a failed write of the feature cache.
RESUME_ADVICE = "rerun the same command: feature extraction goes on from the shards already written"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with named_write_failures(path, RESUME_ADVICE), atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _bar(total: int, desc: str, progress: bool, initial: int = 0):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img")


def _compute(dataset, ids, prep: Preprocessing, encoder, batch_size) -> np.ndarray:
    out = []
    for start in range(0, len(ids), batch_size):
        batch = np.stack(
            [load_pixels(dataset.image_path(i), prep) for i in ids[start : start + batch_size]]
        )
        out.append(np.asarray(encoder(batch, training=False), dtype=np.float32))  # [B, F]
    return (
        np.concatenate(out, axis=0) if out else np.zeros((0, *encoder.output_shape[1:]), np.float32)
    )
