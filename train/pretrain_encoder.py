"""Pretrain the offline demo's encoder on synthetic scenes.

ImageNet weights cannot be downloaded here, so the demo's MobileNet learns the synthetic
world the way an ImageNet model learns photos: as a classifier. Its heads name each
object's size, colour and shape and the axis of the relation, in canonical order (left or
top object first). Only the backbone and its embedding are kept; the caption decoder is
then trained on its frozen, cached features, as with a real pretrained encoder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import atomic_path
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.scenes import COLORS, SHAPES, SIZES, load_scenes, scene_key
from edgecap.edge_runtime.preprocess import load_pixels

from .encoders import build_synth_backbone, get_encoder_spec

log = logging.getLogger(__name__)

AXES = ("none", "to the left of", "above")


@dataclass
class PretrainConfig:
    epochs: int = 24  # passes over the training images
    batch_size: int = 64
    learning_rate: float = 2e-3  # Adam, cosine-decayed to 0 over the run
    seed: int = 0


def scene_targets(scene: dict) -> dict[str, int]:
    """Class ids for every head; the second slot is 'none' (last id) for one-object scenes."""
    key = scene_key(scene)
    slots = [key[0]] if len(key) == 1 else [key[0], key[2]]
    targets = {"axis": AXES.index("none" if len(key) == 1 else key[1])}
    for n, (vocab, index) in enumerate(((SIZES, 0), (tuple(COLORS), 1), (SHAPES, 2))):
        name = ("size", "color", "shape")[n]
        targets[f"first_{name}"] = vocab.index(slots[0][index])
        targets[f"second_{name}"] = vocab.index(slots[1][index]) if len(slots) == 2 else len(vocab)
    return targets


def head_sizes() -> dict[str, int]:
    sizes = {"axis": len(AXES)}
    for name, vocab in (("size", SIZES), ("color", COLORS), ("shape", SHAPES)):
        sizes[f"first_{name}"] = len(vocab)
        sizes[f"second_{name}"] = len(vocab) + 1
    return sizes


def load_split_arrays(
    data_dir: Path, split: str, input_size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ds = load_dataset(data_dir)
    scenes = load_scenes(data_dir)
    if not scenes:
        raise ValueError(
            f"{data_dir}: no scenes.json; encoder pretraining needs a synthetic dataset"
        )
    prep = get_encoder_spec("mobilenet_synth").preprocessing
    prep = type(prep)(**{**prep.to_json(), "input_size": input_size})
    ids = ds.splits[split]
    images = np.stack([load_pixels(ds.image_path(i), prep) for i in ids])  # [N, S, S, 3]
    rows = [scene_targets(scenes[i]) for i in ids]
    targets = {k: np.array([r[k] for r in rows], dtype=np.int32) for k in head_sizes()}
    return images, targets


def pretrain(
    data_dir: str | Path,
    out_file: str | Path,
    config: PretrainConfig | None = None,
    input_size: int = 96,
) -> dict:
    """Train the synthetic encoder and write it (backbone + embedding only) to `out_file`."""
    import keras

    config = config or PretrainConfig()
    keras.utils.set_random_seed(config.seed)
    data_dir = Path(data_dir)
    x_train, y_train = load_split_arrays(data_dir, "train", input_size)
    x_dev, y_dev = load_split_arrays(data_dir, "dev", input_size)

    encoder = build_synth_backbone(input_size)
    image = keras.Input((input_size, input_size, 3), name="image")
    features = encoder(image)
    outputs = {name: keras.layers.Dense(n, name=name)(features) for name, n in head_sizes().items()}
    model = keras.Model(image, outputs)
    steps = config.epochs * int(np.ceil(len(x_train) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(steps, 1)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss={k: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for k in outputs},
        metrics={k: ["accuracy"] for k in outputs},
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        validation_data=(x_dev, y_dev),
        epochs=config.epochs,
        batch_size=config.batch_size,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    predictions = model.predict(x_dev, batch_size=256, verbose=0)
    dev_accuracy = {
        k: float(np.mean(np.argmax(predictions[k], axis=-1) == y_dev[k])) for k in outputs
    }
    with atomic_path(out_file, suffix=".keras") as tmp:
        encoder.save(tmp)
    log.info("wrote %s (%.0f s); dev accuracy per head: %s", out_file, seconds, dev_accuracy)
    return {"seconds": seconds, "dev_accuracy": dev_accuracy, "train_images": len(x_train)}
