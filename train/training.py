"""Train a caption decoder on cached encoder features, with checkpoints and resume.

A run directory holds everything export needs:

    RUN/config.json      what was trained, on what, with which settings
    RUN/vocab.json       the vocabulary (JSON, never pickle)
    RUN/encoder.keras    the encoder, so export needs no download
    RUN/decoder.keras    the kept decoder (teacher-forcing model): the best dev epoch, or the last
    RUN/checkpoints/     last.npz, best.npz and history.jsonl (checkpoint.py), after every epoch
    RUN/metrics.json     greedy evaluation of the final split (default test), written at the end
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecap.edge_runtime.errors import named_write_failures
from edgecap.edge_runtime.evaluation.datasets import CaptionDataset, load_dataset
from edgecap.edge_runtime.evaluation.metrics import score_split
from edgecap.edge_runtime.step_models import SPATIAL_KINDS
from edgecap.edge_runtime.vocab import Vocabulary

from .checkpoint import TrainingCheckpoint, read_history
from .decoders import DecoderConfig, build_training_model
from .distribute import (
    ReplicatedTraining,
    distributed_input,
    epoch_line,
    is_chief,
    make_strategy,
)
from .encoders import build_encoder, get_encoder_spec, resolve_weights
from .features import extract_features
from .inputs import CaptionTable, TrainingBatches
from .keras_captioner import caption_cached

log = logging.getLogger(__name__)
RUN_FORMAT_VERSION = 1
# What a run directory holds: the files atomic_path writes, so that the temporary files a
# killed run leaves behind (".NAME.<random><suffix>", see _remove_stale_temp_files) are known.
# Those of RUN/checkpoints are checkpoint.py's CHECKPOINT_FILES.
RUN_FILES = ("config.json", "vocab.json", "encoder.keras", "decoder.keras", "metrics.json",
             "predictions.jsonl")  # fmt: skip
KEEP_CHOICES = ("dev_cider_d", "last")


@dataclass
class TrainConfig:
    data: str = ""  # dataset folder in the Flickr8k layout
    encoder: str = "mobilenet_synth"  # a registry name (encoders.get_encoder_spec), width included
    weights: str = "default"  # "imagenet", "none", a file, or "default" (the registry's)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    epochs: int = 30  # passes over the (image, caption) pairs of the train split
    # Share of the training examples one epoch sees, drawn afresh every epoch: 1.0 for
    # lstm/merge; about 0.2 makes a BLSTM epoch (one pair per word) cost an LSTM's.
    epoch_fraction: float = 1.0
    batch_size: int = 128
    learning_rate: float = 3e-3  # Adam, cosine-decayed to 0 over the run
    min_count: int = 1  # words seen fewer times map to <unk>
    max_length: int = 0  # 0: the longest training caption, capped at 30 words
    seed: int = 0
    feature_cache: str = ""  # "" -> ~/.cache/edge-caption/features
    # The decoder a run keeps: "dev_cider_d" the epoch with the best greedy CIDEr-D on the
    # dev split (early stopping without stopping), "last" the final epoch.
    keep: str = "dev_cider_d"

    def to_json(self) -> dict:
        out = asdict(self)
        out["decoder"] = self.decoder.to_json()
        return out


def _save_keras_atomic(model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def resume_hint(run_dir: str | Path) -> str:
    """What rerunning the same command does now: the advice printed after a kill or a full disk."""
    run = Path(run_dir)
    done = max((h["epoch"] for h in read_history(run / "checkpoints")), default=0)
    if not done:
        return "rerun the same command to resume; finished feature shards are kept"
    from .runs import RunError, read_run_config  # runs.py imports TrainConfig from here

    try:
        total = f" of {read_run_config(run)[0].train.epochs}"
    except RunError:  # no config.json yet, or not one this version reads
        total = ""
    return f"rerun the same command to resume from epoch {done}{total}"


def _name_write_failures(path: Path, run: Path):
    """A WriteError naming `path` on a full disk or unwritable folder, with the resume hint."""
    return named_write_failures(path, lambda: resume_hint(run))


def _remove_stale_temp_files(run: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted.

    SIGKILL (or a power cut) stops atomic_path before it can clean up, which leaves a
    ".decoder.keras.<random>.keras" beside an intact decoder.keras. One process owns a run
    directory, so any such file is a leftover, never another writer's work in progress.
    (The checkpoint cleans up its own folder.)
    """
    stale = [p for name in RUN_FILES for p in run.glob(f".{name}.*")]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run", len(stale))


def _checkpoint_callback(checkpoint: TrainingCheckpoint):
    """The run's checkpoint after every epoch, with the epoch's logs as its history line;
    last among the callbacks but the progress line, so that it records the dev scores."""
    import keras

    class SaveAfterEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = round(time.perf_counter() - self.epoch_start, 2)
            scores = {k: float(v) for k, v in (logs or {}).items()}
            entry = checkpoint.end_epoch({"epoch": epoch + 1, "seconds": seconds, **scores})
            if entry.get("best") and logs is not None:
                logs["best"] = 1.0  # the progress line shows it

    return SaveAfterEpoch()


DEV_SCORE = "dev_cider_d"  # the history key best.npz is chosen by


def best_dev_cider_d(entry: dict) -> float:
    """The kept epoch's rule: the best dev CIDEr-D; an epoch without one is never kept."""
    score = entry.get(DEV_SCORE)
    return float(score) if isinstance(score, (int, float)) else -math.inf


def _progress_callback(epochs: int):
    """One line per epoch, numbered out of the run's epochs ("Epoch 12/20"), last among
    the callbacks so that it shows the dev scores they add."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            print(epoch_line(epoch, epochs, seconds, logs or {}), flush=True)

    return EpochProgress()


def _dev_scorer(
    dataset: CaptionDataset, features: np.ndarray, config: DecoderConfig, vocab: Vocabulary
):
    """model -> {dev_bleu4, dev_cider_d}: the model's greedy captions of the dev split, scored."""
    ids = dataset.splits["dev"]

    def dev_scores(model) -> dict:
        scores = score_split(dataset, "dev", caption_cached(model, config, vocab, features, ids))
        return {"dev_bleu4": scores.bleu4, DEV_SCORE: scores.cider_d}

    return dev_scores


def _dev_score_callback(dev_scores):
    """Adds the dev scores to every epoch's logs, which the checkpoint callback (after
    this one) records."""
    import keras

    class DevScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs.update(dev_scores(self.model))

    return DevScore()


def train(
    config: TrainConfig,
    run_dir: str | Path,
    progress: bool = True,
    final_split: str = "test",
    distribute: str = "none",
    devices: Sequence[str] = (),
) -> dict:
    """Train (or resume) a run and evaluate it greedily on `final_split`. Returns the metrics
    ({} from a worker that is not the chief, which writes nothing).

    Pass final_split="dev" while choosing settings, so the test split is scored only once,
    for the final model (`caption-train evaluate`). `distribute` and `devices` choose the
    tf.distribute strategy (distribute.py); they are not settings of the run, which trains
    the same on any number of replicas.
    """
    import keras

    strategy = make_strategy(distribute, devices)  # before any other TensorFlow op
    chief = is_chief(strategy)
    run = _open_run(config, run_dir, chief)
    keras.utils.set_random_seed(config.seed)
    dataset = load_dataset(config.data)
    vocab = _vocabulary(config, dataset, run, chief)
    spec, encoder, cache_weights = _encoder(config, run, chief, distribute == "multi-worker")
    features = {
        split: extract_features(
            dataset, split, spec, cache_weights, encoder, config.feature_cache or None,
            progress=progress,
        )
        for split in ("train", "dev", "test")
    }  # fmt: skip
    decoder_config = _decoder_config(config, dataset, vocab, features["train"])
    if chief:
        _write_run_config(config, run, decoder_config, spec)
    tables = {
        split: CaptionTable.build(dataset, split, vocab, decoder_config.max_length)
        for split in ("train", "dev")
    }
    kind, batch_size, fraction = decoder_config.kind, config.batch_size, config.epoch_fraction
    train_batches = TrainingBatches(
        tables["train"], features["train"], kind, batch_size, config.seed, fraction=fraction
    )
    # The dev loss over the same share of dev, drawn once (epoch 0) so epochs compare.
    dev_batches = TrainingBatches(
        tables["dev"], features["dev"], kind, batch_size, config.seed, fraction=fraction
    )
    # keep="last" needs no dev scores, and skips their cost; only the chief keeps a model.
    scores_dev = config.keep == DEV_SCORE and chief
    dev_scores = _dev_scorer(dataset, features["dev"], decoder_config, vocab)
    with strategy.scope():
        model = _model(config, decoder_config, len(train_batches))
        model.optimizer.build(model.trainable_variables)  # its variables belong to the strategy
        # Every worker restores the chief's checkpoint; only the chief writes.
        checkpoint = TrainingCheckpoint(
            run / "checkpoints", {"model": model, "optimizer": model.optimizer}, kept=["model"],
            optimizer="optimizer", steps_per_epoch=len(train_batches),
            objective=best_dev_cider_d if config.keep == DEV_SCORE else None, writer=chief,
            guard=lambda path: _name_write_failures(path, run),
        )  # fmt: skip
        epochs_done = checkpoint.resume(rescore=(lambda: dev_scores(model)) if scores_dev else None)
    if epochs_done:
        log.info("resuming %s from epoch %d of %d", run, epochs_done, config.epochs)
    callbacks = [_checkpoint_callback(checkpoint)] if chief else []
    if scores_dev:
        callbacks.insert(0, _dev_score_callback(dev_scores))
    start = time.perf_counter()
    # One fit call per epoch, so that each epoch's batch order is a function of the epoch
    # alone (see inputs.py) and a resumed run trains exactly what an uninterrupted one would.
    replicated = ReplicatedTraining(model, strategy) if strategy.num_replicas_in_sync > 1 else None
    progress_line = [_progress_callback(config.epochs)] if progress else []
    for epoch in range(epochs_done, config.epochs):
        if replicated is not None:
            replicated.epoch(distributed_input(strategy, train_batches, epoch),
                             distributed_input(strategy, dev_batches, 0, shuffle=fraction < 1.0),
                             epoch, callbacks, config.epochs, progress)  # fmt: skip
            continue
        model.fit(
            train_batches.dataset(epoch),
            validation_data=dev_batches.dataset(0, shuffle=fraction < 1.0),
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,  # the batches come shuffled (inputs.batch_plan)
            callbacks=callbacks + progress_line,
            verbose=0,  # fit's own line would say "Epoch 12/12": it sees one epoch a call
        )
    train_seconds = time.perf_counter() - start
    if not chief:
        return {}
    kept = checkpoint.restore_best()
    if kept is not None:
        log.info("keeping epoch %s: best dev CIDEr-D %.4f", kept["epoch"], kept[DEV_SCORE])
    with _name_write_failures(run / "decoder.keras", run):
        _save_keras_atomic(model, run / "decoder.keras")

    if final_split == "none":
        return {}
    metrics = evaluate_keras(
        run, dataset, features[final_split], model, decoder_config, vocab, final_split
    )
    metrics["train_seconds_this_session"] = round(train_seconds, 1)
    # Over every session of this run, resumed ones included.
    seconds = sum(h.get("seconds", 0.0) for h in checkpoint.history)
    metrics["train_seconds"] = round(seconds, 1)
    with _name_write_failures(run / "metrics.json", run):
        write_json_atomic(run / "metrics.json", metrics)
    return metrics


def _open_run(config: TrainConfig, run_dir: str | Path, chief: bool = True) -> Path:
    """The run folder, refused if it holds a run of other settings; the chief creates it
    and removes stale temp files."""
    if config.keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, not {config.keep!r}")
    run = Path(run_dir)
    if not chief:
        return run
    run.mkdir(parents=True, exist_ok=True)
    if (run / "config.json").exists():
        from .runs import read_run_config  # runs.py imports TrainConfig from here

        if read_run_config(run)[0].train != config:
            raise ValueError(
                f"{run} already holds a run with other settings; pass a new --out, or delete {run} to start over"
            )
    _remove_stale_temp_files(run)
    return run


def _vocabulary(
    config: TrainConfig, dataset: CaptionDataset, run: Path, write: bool = True
) -> Vocabulary:
    """The run's vocabulary: vocab.json if this run wrote it already, else built from train
    (the same on every worker: it depends on the captions alone)."""
    vocab_file = run / "vocab.json"
    if vocab_file.exists():
        return Vocabulary.load(vocab_file)
    vocab = Vocabulary.build(
        (c for _, caps in dataset.split_items("train") for c in caps),
        min_count=config.min_count,
    )
    if write:
        with _name_write_failures(vocab_file, run):
            vocab.save(vocab_file)
    return vocab


def _encoder(config: TrainConfig, run: Path, write: bool = True, multi_worker: bool = False):
    """(spec, encoder, the weights its features are cached under): encoder.keras if this
    run saved it already, else built from the registry and saved."""
    import keras

    spec = get_encoder_spec(config.encoder)
    weights = resolve_weights(spec, config.weights)
    encoder_file = run / "encoder.keras"
    if encoder_file.exists():
        encoder = keras.models.load_model(encoder_file, safe_mode=True, compile=False)
    elif weights is None and multi_worker:
        raise ValueError(
            f"--weights {config.weights}: random encoder weights would differ from worker to "
            "worker; pass --weights imagenet or a weights file for --distribute multi-worker"
        )
    else:
        spatial = config.decoder.kind in SPATIAL_KINDS  # attend reads the map, not the pool
        encoder = build_encoder(config.encoder, config.weights, spatial=spatial)
        if write:
            with _name_write_failures(encoder_file, run):
                _save_keras_atomic(encoder, encoder_file)
    # Features come from the saved encoder file, so that export converts exactly this model.
    return spec, encoder, str(encoder_file) if weights is None else weights


def _decoder_config(
    config: TrainConfig, dataset: CaptionDataset, vocab: Vocabulary, train_features: np.ndarray
) -> DecoderConfig:
    """The decoder's full config: sizes from the vocabulary and features."""
    max_length = config.max_length or min(
        30, max(len(vocab.encode(c)) for _, cs in dataset.split_items("train") for c in cs)
    )
    return DecoderConfig(
        **{
            **config.decoder.to_json(),
            "vocab_size": len(vocab),
            "feature_dim": int(train_features.shape[-1]),  # [N, F] or [N, P, F]
            "feature_positions": int(train_features.shape[1]) if train_features.ndim == 3 else 0,
            "max_length": max_length,
        }
    )


def _write_run_config(config: TrainConfig, run: Path, decoder_config: DecoderConfig, spec) -> None:
    """config.json: the decoder's full config with the rest of the run's facts."""
    with _name_write_failures(run / "config.json", run):
        write_json_atomic(
            run / "config.json",
            {
                "format_version": RUN_FORMAT_VERSION,
                "train": config.to_json(),
                "decoder": decoder_config.to_json(),
                "encoder": {
                    "name": spec.name,
                    "alpha": spec.alpha,
                    "input_size": spec.input_size,
                    "weights": config.weights,
                    "preprocessing": spec.preprocessing.to_json(),
                },
                "data": str(Path(config.data).resolve()),
            },
        )


def _model(config: TrainConfig, decoder_config: DecoderConfig, steps_per_epoch: int):
    """A new compiled training model; a resumed run restores its checkpoint into it."""
    import keras

    model = build_training_model(decoder_config)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    return model


def evaluate_keras(
    run: Path,
    dataset: CaptionDataset,
    features: np.ndarray,
    model,
    config: DecoderConfig,
    vocab: Vocabulary,
    split: str = "test",
) -> dict:
    """Greedy-decode a split with the shared decoding code and score it."""
    ids = dataset.splits[split]
    predictions = caption_cached(model, config, vocab, features, ids)
    scores = score_split(dataset, split, predictions)
    metrics = {"split": split, **scores.to_json()}
    with (
        _name_write_failures(run / "predictions.jsonl", run),
        atomic_path(run / "predictions.jsonl") as tmp,
    ):
        tmp.write_text(
            "".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in predictions.items())
        )
    return metrics
