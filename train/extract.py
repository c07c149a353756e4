"""`caption-train extract`: fill the feature cache ahead of training, on one or many workers.

    caption-train extract --data D --encoder E --weights W --feature-cache DIR [--shard I/N]

Each worker computes the shards k with k % N == I of every split and writes them into the
same cache folder (shared storage for several machines) with the same atomic writes
training uses; a rerun skips the shards already there. Without --shard, a worker named in
TF_CONFIG (the variable tf.distribute reads) takes its slice: chief first, then the
workers in order. Training, or a last `extract` without a slice, then finds every shard
and only concatenates them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SPLITS = ("train", "dev", "test")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(
            f"--shard {text!r}: write it as I/N, e.g. 0/4 for the first of 4"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: I must be in 0..N-1 (the first of 4 is 0/4)")
    return index, count


def worker_from_tf_config(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """This process's (index, count) among TF_CONFIG's chief and workers, or None without it."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        return None
    try:
        cluster_spec = json.loads(raw)
        cluster, task = cluster_spec["cluster"], cluster_spec["task"]
        members = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        members += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        return members.index((task["type"], int(task["index"]))), len(members)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"TF_CONFIG is not a tf.distribute cluster this command can split ({exc!r}); "
            "it needs cluster.chief/worker lists and task.type/index, or pass --shard I/N"
        ) from None


def extract(
    data: str,
    encoder_name: str,
    weights: str,
    cache_dir: str,
    splits: tuple[str, ...] = SPLITS,
    worker: tuple[int, int] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    spatial: bool = False,
) -> dict[str, str]:
    """Compute this worker's shards (or everything) of each split; returns what each did."""
    from edgecap.edge_runtime.evaluation.datasets import load_dataset

    from . import features as cache
    from .encoders import build_encoder, get_encoder_spec, resolve_weights

    spec = get_encoder_spec(encoder_name)
    resolved = resolve_weights(spec, weights)
    if resolved is None:
        raise ValueError(
            f"--weights {weights}: random weights differ from run to run, so there is nothing "
            "to share ahead of training; pass --weights imagenet or a weights file"
        )
    dataset = load_dataset(data)
    encoder = build_encoder(encoder_name, weights, spatial=spatial)  # spatial: attend's map
    done = {}
    for split in splits:
        features = cache.extract_features(
            dataset, split, spec, resolved, encoder, Path(cache_dir), batch_size, progress, worker
        )
        if features is not None:
            done[split] = f"{len(features)} images, all shards joined"
            continue
        shards = -(-len(dataset.splits[split]) // cache.SHARD_SIZE)
        own = len(range(worker[0], shards, worker[1]))
        done[split] = (
            f"worker {worker[0]} of {worker[1]}: its {own} of {shards} shards are in the cache"
        )
    return done
