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
from edgecap.edge_runtime.preprocess import load_image, preprocess

from .encoders import EncoderSpec
from .flickr8k import CaptionDataset

log = logging.getLogger(__name__)

SHARD_SIZE = 256  # images per shard: the most work a kill can lose


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-caption" / "features"


def cache_key(dataset: CaptionDataset, split: str, spec: EncoderSpec, weights: str) -> str:
    """Changes whenever the images, the split, the encoder or its weights change.

    `weights` is "imagenet" or a file; random weights are saved to a file first (the run's
    encoder.keras), so that they have a hash too.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([spec.name, spec.input_size, weights == "imagenet"]).encode())
    if weights != "imagenet":
        digest.update(sha256_file(weights).encode())
    for image_id in dataset.splits[split]:
        stat = dataset.image_path(image_id).stat()
        digest.update(f"{image_id}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
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
) -> np.ndarray:
    """Features [N, F] of every image of `split`, in split order."""
    key = cache_key(dataset, split, spec, weights)
    folder = Path(cache_dir or default_cache_dir()) / f"{spec.name}-{split}-{key}"
    final = folder / "features.npy"
    if final.exists():
        log.info("features for %s/%s from cache %s", spec.name, split, final)
        return np.load(final, allow_pickle=False)
    folder.mkdir(parents=True, exist_ok=True)
    ids = dataset.splits[split]
    shards = [ids[i : i + SHARD_SIZE] for i in range(0, len(ids), SHARD_SIZE)]
    done = sum((folder / f"shard_{k:05d}.npy").exists() for k in range(len(shards)))
    if done:
        log.info(
            "resuming feature extraction: %d of %d shards already in %s", done, len(shards), folder
        )
    bar = _bar(len(ids), f"features {split}", progress, initial=min(done * SHARD_SIZE, len(ids)))
    parts = []
    for k, shard in enumerate(shards):
        shard_file = folder / f"shard_{k:05d}.npy"
        if shard_file.exists():
            parts.append(np.load(shard_file, allow_pickle=False))
            continue
        features = _compute(dataset, shard, spec, encoder, batch_size, progress=False)
        with atomic_path(shard_file, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)
        parts.append(features)
        if bar is not None:
            bar.update(len(shard))
    if bar is not None:
        bar.close()
    features = np.concatenate(parts, axis=0)  # [N, F]
    with atomic_path(final, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features, allow_pickle=False)
    write_json_atomic(
        folder / "info.json",
        {"encoder": spec.name, "split": split, "images": len(ids), "dataset": str(dataset.root)},
    )
    for k in range(len(shards)):
        (folder / f"shard_{k:05d}.npy").unlink(missing_ok=True)
    return features


def _bar(total: int, desc: str, progress: bool, initial: int = 0):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img")


def _compute(dataset, ids, spec, encoder, batch_size, progress, desc="features") -> np.ndarray:
    bar = _bar(len(ids), desc, progress)
    out = []
    for start in range(0, len(ids), batch_size):
        batch = np.stack(
            [
                preprocess(load_image(dataset.image_path(i)), spec.preprocessing)
                for i in ids[start : start + batch_size]
            ]
        )
        out.append(np.asarray(encoder(batch, training=False), dtype=np.float32))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return (
        np.concatenate(out, axis=0) if out else np.zeros((0, encoder.output_shape[-1]), np.float32)
    )
