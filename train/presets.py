"""The seed project's four configurations, as `caption-train --preset NAME`.

The seed compared InceptionV3 and MobileNet (v1) encoders, each with an LSTM and a
bidirectional LSTM decoder, with ImageNet weights. Its "LSTM" is the merge family (the
image embedding is added to the LSTM output), with 256-wide embeddings and layers and
dropout 0.5. Text normalization and the training loop are ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    encoder: str  # registry name (train/encoders.py)
    decoder: str  # decoder kind
    weights: str = "imagenet"
    embed_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    epochs: int = 20
    batch_size: int = 128


PRESETS: dict[str, Preset] = {
    "seed-inception-lstm": Preset("inception_v3", "merge"),
    "seed-inception-blstm": Preset("inception_v3", "blstm", batch_size=256),
    "seed-mobilenet-lstm": Preset("mobilenet", "merge"),
    "seed-mobilenet-blstm": Preset("mobilenet", "blstm", batch_size=256),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
