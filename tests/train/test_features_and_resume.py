"""Feature extraction resumes after a crash; training resumes from its last checkpoint."""

import dataclasses
import json

import numpy as np
import pytest
from interruptions import interrupt_fit_after_epoch, kill_before_history_line

from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.train import features as features_mod
from edgecap.train import training
from edgecap.train.checkpoint import HISTORY, TrainingCheckpoint, read_history, saved_steps
from edgecap.train.decoders import DecoderConfig
from edgecap.train.encoders import get_encoder_spec
from edgecap.train.synthetic import generate


class MeanColourEncoder:
    """A stand-in encoder: the mean of each channel. Counts the images it sees."""

    def __init__(self, fail_after: int | None = None):
        self.seen = 0
        self.fail_after = fail_after

    def __call__(self, batch, training=False):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.seen += len(batch)
        return batch.mean(axis=(1, 2))  # [B, 3]


def _tiny_cache_setup(tmp_path, monkeypatch, seed: int):
    """48 synthetic 32 px images (36 train), their spec, a fake weights file, 8-image shards."""
    generate(tmp_path / "data", 48, seed=seed, image_size=32, progress=False)
    spec = dataclasses.replace(get_encoder_spec("mobilenet_synth"), input_size=32)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"fake weights")
    monkeypatch.setattr(features_mod, "SHARD_SIZE", 8)
    return load_dataset(tmp_path / "data"), spec, weights


def test_feature_extraction_resumes_and_caches(tmp_path, monkeypatch):
    dataset, spec, weights = _tiny_cache_setup(tmp_path, monkeypatch, seed=2)

    crashing = MeanColourEncoder(fail_after=16)
    with pytest.raises(KeyboardInterrupt):
        features_mod.extract_features(
            dataset,
            "train",
            spec,
            str(weights),
            crashing,
            tmp_path / "cache",
            batch_size=8,
            progress=False,
        )
    folder = next((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [
        "shard_00000.npy",
        "shard_00001.npy",
    ]  # no partial file

    resumed = MeanColourEncoder()
    result = features_mod.extract_features(
        dataset,
        "train",
        spec,
        str(weights),
        resumed,
        tmp_path / "cache",
        batch_size=8,
        progress=False,
    )
    assert resumed.seen == 36 - 16  # only the missing shards
    fresh = MeanColourEncoder()
    expected = features_mod._compute(dataset, dataset.splits["train"], spec.preprocessing, fresh, 8)
    np.testing.assert_allclose(result, expected)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "info.json"]

    cached = MeanColourEncoder()
    again = features_mod.extract_features(
        dataset,
        "train",
        spec,
        str(weights),
        cached,
        tmp_path / "cache",
        batch_size=8,
        progress=False,
    )
    assert cached.seen == 0 and np.array_equal(again, result)
    weights.write_bytes(b"other weights")  # new weights -> new cache entry
    assert features_mod.cache_key(dataset, "train", spec, str(weights)) not in folder.name


def _three_epochs_on_40_scenes(tmp_path) -> training.TrainConfig:
    """A tiny synthetic run the resume tests interrupt: 3 epochs, dev scored each epoch."""
    generate(tmp_path / "data", 40, seed=4, progress=False)
    return training.TrainConfig(
        data=str(tmp_path / "data"), encoder="mobilenet_synth", weights="none",
        decoder=DecoderConfig(units=16, embed_dim=8), epochs=3, batch_size=32,
        feature_cache=str(tmp_path / "cache"),
    )  # fmt: skip


def _epoch_lines(capsys) -> list[str]:
    return [line.split(" - ")[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("Epoch ")]  # fmt: skip


def test_training_resumes_from_last_checkpoint(tmp_path, monkeypatch, capsys):
    generate(tmp_path / "data", 40, seed=4, progress=False)
    config = training.TrainConfig(
        data=str(tmp_path / "data"),
        encoder="mobilenet_synth",
        weights="none",
        decoder=DecoderConfig(units=16, embed_dim=8),
        epochs=3,
        batch_size=32,
        feature_cache=str(tmp_path / "cache"),
    )
    interrupt_fit_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, tmp_path / "run")
    # Numbered out of the run's epochs, though fit is called once per epoch (the Ctrl-C came
    # before epoch 2's line).
    assert _epoch_lines(capsys) == ["Epoch 1/3"]
    checkpoints = tmp_path / "run" / "checkpoints"
    history = read_history(checkpoints)
    assert len(history) == 2 and not (tmp_path / "run" / "decoder.keras").exists()
    # The checkpoint alone says where training stands: a history that claims more (a hand
    # edit, a copy from another run) is trimmed to what last.npz holds, not believed.
    with open(checkpoints / HISTORY, "a") as f:
        f.write(json.dumps({"epoch": 3, "stale": True}) + "\n")

    monkeypatch.undo()
    metrics = training.train(config, tmp_path / "run")
    assert _epoch_lines(capsys) == ["Epoch 3/3"]
    history = read_history(checkpoints)
    assert [h["epoch"] for h in history] == [1, 2, 3]  # epoch 3 only was trained again
    assert "stale" not in history[2] and "loss" in history[2]
    assert (tmp_path / "run" / "decoder.keras").is_file() and metrics["images"] == 5

    other = training.TrainConfig(**{**config.__dict__, "learning_rate": 0.5})
    with pytest.raises(ValueError, match="already holds a run with other settings"):
        training.train(other, tmp_path / "run", progress=False)


def test_training_killed_between_its_checkpoint_writes_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    """Killed after epoch 2's last.npz (and best.npz) are in place but before its history
    line: the rerun goes on from the model, logs epoch 2 again with its dev scores (so the
    kept epoch is chosen as before), trains no epoch twice and keeps what an uninterrupted
    run keeps."""
    import keras

    config = _three_epochs_on_40_scenes(tmp_path)
    whole = tmp_path / "whole"
    uninterrupted = training.train(config, whole, progress=False, final_split="dev")

    kill_before_history_line(monkeypatch, 2)
    cut = tmp_path / "cut"
    with pytest.raises(SystemExit):
        training.train(config, cut, progress=False, final_split="dev")
    monkeypatch.undo()
    steps = saved_steps(whole / "checkpoints", "optimizer") // 3
    assert [h["epoch"] for h in read_history(cut / "checkpoints")] == [1]
    assert saved_steps(cut / "checkpoints", "optimizer") == 2 * steps  # the model is ahead

    resumed = training.train(config, cut, progress=False, final_split="dev")
    mine, theirs = read_history(cut / "checkpoints"), read_history(whole / "checkpoints")
    assert [h["epoch"] for h in mine] == [1, 2, 3] and mine[1]["recovered"] is True
    for ours, expected in zip(mine, theirs, strict=True):
        for key in ("dev_bleu4", "dev_cider_d"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-6), (ours, expected)
        assert ours.get("best") == expected.get("best")
    assert mine[2]["loss"] == pytest.approx(theirs[2]["loss"], rel=1e-5)  # the same epoch 3
    assert resumed["cider_d"] == pytest.approx(uninterrupted["cider_d"], abs=1e-6)
    kept, expected = (keras.models.load_model(run / "decoder.keras", safe_mode=True)
                      for run in (cut, whole))  # fmt: skip
    for a, b in zip(kept.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_run_half_trained_with_the_keras_checkpoint_of_earlier_versions_goes_on(
    tmp_path, monkeypatch
):
    """Runs checkpointed before TrainingCheckpoint hold checkpoints/last.keras (the model
    with its optimizer), best.keras and state.json: the rerun adopts them as last.npz,
    best.npz and history.jsonl, and ends as an uninterrupted run."""
    import keras

    config = _three_epochs_on_40_scenes(tmp_path)
    whole = tmp_path / "whole"
    training.train(config, whole, progress=False, final_split="none")

    interrupt_fit_after_epoch(monkeypatch, 2)
    old = tmp_path / "old"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, old, progress=False, final_split="none")
    monkeypatch.undo()
    # Write its checkpoint as the earlier versions did, and remove the new one.
    checkpoints = old / "checkpoints"
    decoder_config = DecoderConfig(**json.loads((old / "config.json").read_text())["decoder"])
    steps = saved_steps(checkpoints, "optimizer") // 2
    model = training._model(config, decoder_config, steps)
    model.optimizer.build(model.trainable_variables)
    checkpoint = TrainingCheckpoint(checkpoints, {"model": model, "optimizer": model.optimizer},
                                    kept=["model"], optimizer="optimizer", steps_per_epoch=steps,
                                    objective=training.best_dev_cider_d, writer=False)  # fmt: skip
    assert checkpoint.resume() == 2
    model.save(checkpoints / "last.keras")
    if checkpoint.restore_best() is not None:
        model.save(checkpoints / "best.keras")
    history = [{**h, "best": 1.0} if h.get("best") else h for h in checkpoint.history]
    (checkpoints / "state.json").write_text(json.dumps({"epochs_done": 2, "history": history}))
    for name in ("last.npz", "best.npz", HISTORY):
        (checkpoints / name).unlink(missing_ok=True)

    training.train(config, old, progress=False, final_split="none")
    mine, theirs = read_history(checkpoints), read_history(whole / "checkpoints")
    assert [h["epoch"] for h in mine] == [1, 2, 3] and "recovered" not in mine[2]
    for ours, expected in zip(mine, theirs, strict=True):
        assert ours["dev_cider_d"] == pytest.approx(expected["dev_cider_d"], abs=1e-6)
        assert bool(ours.get("best")) == bool(expected.get("best"))
    assert saved_steps(checkpoints, "optimizer") == 3 * steps
    # The same epoch 3 from the same weights and optimizer state; only the dropout masks
    # differ, since a .keras file does not hold the seed generators' state (last.npz does).
    assert mine[2]["loss"] == pytest.approx(theirs[2]["loss"], rel=1e-2)
    kept = keras.models.load_model(old / "decoder.keras", safe_mode=True)
    assert [w.shape for w in kept.get_weights()] == [w.shape for w in model.get_weights()]


def test_an_epoch_fraction_trains_that_share_of_the_blstm_pairs(tmp_path):
    from edgecap.train.inputs import CaptionTable, steps_per_epoch

    generate(tmp_path / "data", 40, seed=4, progress=False)
    config = training.TrainConfig(
        data=str(tmp_path / "data"),
        encoder="mobilenet_synth",
        weights="none",
        decoder=DecoderConfig(kind="blstm", units=8, embed_dim=8),
        epochs=1,
        epoch_fraction=0.25,
        batch_size=16,
        feature_cache=str(tmp_path / "cache"),
        keep="last",
    )
    training.train(config, tmp_path / "run", progress=False, final_split="none")
    steps = saved_steps(tmp_path / "run" / "checkpoints", "optimizer")
    dataset = training.load_dataset(config.data)
    vocab = training.Vocabulary.load(tmp_path / "run" / "vocab.json")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["decoder"]
    table = CaptionTable.build(dataset, "train", vocab, saved["max_length"])
    every, share = (steps_per_epoch(table, "blstm", 16, f) for f in (1.0, 0.25))
    assert steps == share and share < every / 3


def test_cache_key_follows_the_image_bytes_not_their_file_times(tmp_path):
    import os

    generate(tmp_path / "data", 12, seed=2, progress=False)
    spec, weights = get_encoder_spec("mobilenet_synth"), "imagenet"
    key = features_mod.cache_key(load_dataset(tmp_path / "data"), "train", spec, weights)
    dataset = load_dataset(tmp_path / "data")
    for image_id in dataset.splits["train"]:  # as after a fresh copy or mount of the photos
        os.utime(dataset.image_path(image_id), (1_000_000_000, 1_000_000_000))
    assert features_mod.cache_key(load_dataset(tmp_path / "data"), "train", spec, weights) == key
    victim = dataset.image_path(dataset.splits["train"][0])
    victim.write_bytes(victim.read_bytes() + b"\0")  # the same size would not save it either
    assert features_mod.cache_key(load_dataset(tmp_path / "data"), "train", spec, weights) != key


def test_two_workers_shards_join_into_what_one_worker_makes(tmp_path, monkeypatch):
    from edgecap.train.extract import parse_shard, worker_from_tf_config

    # 36 train images in 5 shards: worker 0 gets 3, worker 1 gets 2.
    dataset, spec, weights = _tiny_cache_setup(tmp_path, monkeypatch, seed=3)

    def extract(cache, worker=None, encoder=None):
        return features_mod.extract_features(dataset, "train", spec, str(weights),
                                             encoder or MeanColourEncoder(), cache, 8, False,
                                             worker)  # fmt: skip

    first, second = MeanColourEncoder(), MeanColourEncoder()
    assert extract(tmp_path / "shared", (0, 2), first) is None
    assert extract(tmp_path / "shared", (1, 2), second) is None
    assert (first.seen, second.seen) == (8 + 8 + 4, 8 + 8)  # shards 0, 2, 4 and 1, 3
    joining = MeanColourEncoder()
    joined = extract(tmp_path / "shared", encoder=joining)
    assert joining.seen == 0  # training only concatenates
    alone = extract(tmp_path / "alone")
    assert joined.dtype == alone.dtype and np.array_equal(joined, alone)

    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    cluster = {"chief": ["host:1"], "worker": ["host:2", "host:3"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    assert worker_from_tf_config({"TF_CONFIG": tf_config}) == (2, 3)
    assert worker_from_tf_config({}) is None


def test_extraction_runs_a_keras_encoder_as_one_traced_function():
    import keras

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    encoder = keras.Model(inputs, pooled)
    batch = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    traced = features_mod.graph_encoder(encoder)
    # The same features as the eager call, for a full and a short (last) batch.
    for rows in (batch, batch[:2]):
        assert np.allclose(traced(rows), encoder(rows, training=False), atol=1e-6)
    stand_in = MeanColourEncoder()
    assert features_mod.graph_encoder(stand_in) is stand_in  # not Keras: used as it is
