"""A finished run directory, loaded for export and evaluation: models, vocabulary, config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.preprocess import Preprocessing
from edgecap.edge_runtime.vocab import Vocabulary

from .decoders import DecoderConfig

REQUIRED = ("config.json", "vocab.json", "encoder.keras", "decoder.keras")


class RunError(EdgeCaptionError):
    """A run directory is missing files or was not finished."""


@dataclass
class TrainedRun:
    path: Path
    config: dict
    decoder_config: DecoderConfig
    vocab: Vocabulary
    preprocessing: Preprocessing
    encoder: object  # keras.Model
    decoder: object  # keras.Model

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data"])


def load_run(path: str | Path) -> TrainedRun:
    import keras

    path = Path(path)
    for name in REQUIRED:
        if not (path / name).is_file():
            raise RunError(
                f"{path / name}: not found; is {path} a finished caption-train run? (rerun caption-train to finish it)"
            )
    config = json.loads((path / "config.json").read_text())
    return TrainedRun(
        path=path,
        config=config,
        decoder_config=DecoderConfig(**config["decoder"]),
        vocab=Vocabulary.load(path / "vocab.json"),
        preprocessing=Preprocessing.from_json(
            config["encoder"]["preprocessing"], str(path / "config.json")
        ),
        encoder=keras.models.load_model(path / "encoder.keras", safe_mode=True, compile=False),
        decoder=keras.models.load_model(path / "decoder.keras", safe_mode=True, compile=False),
    )
