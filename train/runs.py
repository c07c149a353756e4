"""A finished run directory, loaded for export and evaluation: models, vocabulary, config.

RUN/config.json is read once, here, into a typed RunConfig; nothing else indexes the raw
dict. The dict itself is kept too (TrainedRun.config_json): a bundle records its hash, and
the next stage (finetune, scst) writes it back with its own section added, both of which
must see the file as it is, not as today's dataclasses would write it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.preprocess import Preprocessing
from edgecap.edge_runtime.schema import from_json
from edgecap.edge_runtime.vocab import Vocabulary

from .decoders import DecoderConfig
from .training import TrainConfig

REQUIRED = ("config.json", "vocab.json", "encoder.keras", "decoder.keras")


class RunError(EdgeCaptionError):
    """A run directory is missing files or was not finished."""


@dataclass(frozen=True)
class RunEncoder:
    """config.json's encoder: the registry entry the run was built from."""

    name: str  # encoders.get_encoder_spec's name
    preprocessing: dict[str, Any]  # Preprocessing.from_json checks it (TrainedRun.preprocessing)
    alpha: float | None = None
    input_size: int | None = None
    weights: str | None = None  # runs of older versions recorded them under train only


@dataclass(frozen=True)
class RunStage:
    """A later stage's section (finetune, scst): the run it started from and the settings
    it ran with. The settings stay as written: runs made before a setting existed trained
    without it, which today's default would misstate (FinetuneConfig / ScstConfig)."""

    parent: str = ""  # the parent run's folder, absolute
    settings: dict[str, Any] = field(default_factory=dict)

    __json_extra__ = "settings"


@dataclass(frozen=True)
class RunConfig:
    """RUN/config.json: what was trained, on what, with which settings."""

    train: TrainConfig  # the cross-entropy stage's settings, as asked (sizes measured later)
    decoder: DecoderConfig  # the decoder as built: vocabulary and feature sizes filled in
    encoder: RunEncoder
    data: str  # the dataset folder, absolute
    format_version: int = 1
    finetune: RunStage | None = None
    scst: RunStage | None = None

    @property
    def weights(self) -> str | None:
        """The encoder weights the run was built from (a file, 'imagenet', 'default', ...)."""
        return self.encoder.weights or self.train.weights

    @property
    def encoder_trained(self) -> bool:
        """True once `caption-train finetune`, or SCST with --train-blocks, trained the
        encoder past those weights."""
        learned_from_reward = self.scst is not None and self.scst.settings.get("train_blocks", 0)
        return self.finetune is not None or bool(learned_from_reward)


@dataclass
class TrainedRun:
    path: Path
    config: RunConfig
    decoder_config: DecoderConfig
    vocab: Vocabulary
    preprocessing: Preprocessing
    encoder: object  # keras.Model
    decoder: object  # keras.Model
    config_json: dict[str, Any] = field(default_factory=dict)  # config.json as written

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data)


def read_run_config(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """RUN/config.json, typed and as written; RunError naming the file and the field."""
    config_file = Path(path) / "config.json"
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise RunError(f"{config_file}: not a readable run config ({exc})") from None
    return from_json(RunConfig, raw, str(config_file), error=RunError), raw


def saved_stage(
    out: Path, stage: str, settings: dict[str, Any], defaults: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """For a `stage` command (finetune, scst) writing the run at `out` with `settings`: None
    where `out` holds no run yet; else (the stage's settings as the run saved them, over
    `defaults` for the settings older versions did not write; config.json as written).
    Refused with ValueError where they differ from `settings` in anything but the epochs, or
    where `settings` asks for fewer epochs: a run resumes, or goes on past its last epoch."""
    if not (out / "config.json").exists():
        return None
    config, written = read_run_config(out)
    section = getattr(config, stage)
    saved = {
        **(defaults or {}),
        **({"parent": section.parent, **section.settings} if section else {}),
    }
    if {**saved, "epochs": settings["epochs"]} != settings:
        raise ValueError(
            f"{out} already holds a run with other settings; pass a new --out, or delete {out} "
            "to start over"
        )
    if settings["epochs"] < saved["epochs"]:
        raise ValueError(
            f"{out} already holds a run of {saved['epochs']} epochs; pass --epochs "
            f"{saved['epochs']} or more to resume or continue it, or a new --out"
        )
    return saved, written


def load_run(path: str | Path) -> TrainedRun:
    import keras

    path = Path(path)
    for name in REQUIRED:
        if not (path / name).is_file():
            raise RunError(
                f"{path / name}: not found; is {path} a finished caption-train run? (rerun caption-train to finish it)"
            )
    config, raw = read_run_config(path)
    return TrainedRun(
        path=path,
        config=config,
        decoder_config=config.decoder,
        vocab=Vocabulary.load(path / "vocab.json"),
        preprocessing=Preprocessing.from_json(
            config.encoder.preprocessing, str(path / "config.json")
        ),
        encoder=keras.models.load_model(path / "encoder.keras", safe_mode=True, compile=False),
        decoder=keras.models.load_model(path / "decoder.keras", safe_mode=True, compile=False),
        config_json=raw,
    )
