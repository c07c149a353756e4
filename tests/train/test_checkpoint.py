"""train/checkpoint.py's TrainingCheckpoint on its own: what it restores, what it logs, and
what it refuses. The trainers' own resume-after-kill tests use it through fit, the
replicated epoch, finetune and SCST."""

import json

import numpy as np
import pytest

from edgecap.train.checkpoint import (
    HISTORY,
    CheckpointError,
    TrainingCheckpoint,
    read_history,
    saved_steps,
)

keras = pytest.importorskip("keras")


def _trained(units: int = 4, seed: int = 0) -> dict:
    """Two tiny models, each with its own Adam optimizer, as fine-tuning has them."""
    keras.utils.set_random_seed(seed)
    first = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])
    second = keras.Sequential([keras.Input((units,)), keras.layers.Dense(2)])
    optimizers = keras.optimizers.Adam(0.1), keras.optimizers.Adam(0.01)
    optimizers[0].build(first.trainable_variables)
    optimizers[1].build(second.trainable_variables)
    return {"first": first, "second": second, "first_optimizer": optimizers[0],
            "second_optimizer": optimizers[1]}  # fmt: skip


def _steps(trained: dict, count: int) -> None:
    import tensorflow as tf

    x = tf.ones((5, 3))
    for _ in range(count):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(trained["second"](trained["first"](x)) ** 2)
        first, second = trained["first"].trainable_variables, trained["second"].trainable_variables
        gradients = tape.gradient(loss, [*first, *second])
        trained["first_optimizer"].apply_gradients(zip(gradients[:2], first, strict=True))
        trained["second_optimizer"].apply_gradients(zip(gradients[2:], second, strict=True))


def _checkpoint(folder, trained, steps_per_epoch: int = 2, **kwargs) -> TrainingCheckpoint:
    return TrainingCheckpoint(folder, trained, kept=["first", "second"],
                              optimizer="second_optimizer", steps_per_epoch=steps_per_epoch,
                              **kwargs)  # fmt: skip


def _score(entry: dict) -> float:
    return entry.get("score", -np.inf)


def test_two_models_and_two_optimizers_come_back_with_their_progress(tmp_path):
    trained = _trained()
    checkpoint = _checkpoint(tmp_path, trained, objective=_score)
    assert checkpoint.resume() == 0 and checkpoint.history == []
    for epoch, score in ((1, 0.5), (2, 0.4)):
        _steps(trained, 2)
        checkpoint.end_epoch({"epoch": epoch, "score": score})
    assert [h.get("best") for h in read_history(tmp_path)] == [True, None]
    assert saved_steps(tmp_path, "second_optimizer") == 4

    again = _trained(seed=1)  # other starting weights: all of them must be restored
    resumed = _checkpoint(tmp_path, again, objective=_score)
    assert resumed.resume() == 2 and resumed.history == read_history(tmp_path)
    for name in trained:
        for a, b in zip(trained[name].variables, again[name].variables, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(np.asarray(again["first_optimizer"].iterations)) == 4

    assert resumed.restore_best()["epoch"] == 1  # the best epoch's models, not the last's
    assert not np.array_equal(np.asarray(again["first"].variables[0]),
                              np.asarray(trained["first"].variables[0]))  # fmt: skip
    # Plain arrays, read without pickle.
    with np.load(tmp_path / "last.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype.kind in "fiub" for key in arrays.files)


def test_the_history_follows_the_model_not_the_reverse(tmp_path):
    trained = _trained()
    checkpoint = _checkpoint(tmp_path, trained)
    checkpoint.resume()
    _steps(trained, 2)
    checkpoint.end_epoch({"epoch": 1, "loss": 1.0})
    with open(tmp_path / HISTORY, "a") as f:  # an edit, or a copy from a longer run
        f.write(json.dumps({"epoch": 2, "loss": 0.5}) + "\n")
        f.write('{"epoch": 3, "lo')  # and a line torn by a kill
    assert [h["epoch"] for h in read_history(tmp_path)] == [1, 2]  # read up to the torn line
    resumed = _checkpoint(tmp_path, _trained())
    assert resumed.resume() == 1
    logged = {"epoch": 1, "loss": 1.0, "peak_memory_mb": resumed.history[0]["peak_memory_mb"]}
    assert logged["peak_memory_mb"] > 0  # every epoch's line says what the process held
    assert read_history(tmp_path) == resumed.history == [logged]
    assert (tmp_path / HISTORY).read_text() == json.dumps(logged) + "\n"


def test_an_epoch_a_kill_left_unlogged_is_scored_again_and_kept_by_the_rule(tmp_path, monkeypatch):
    trained = _trained()
    checkpoint = _checkpoint(tmp_path, trained, objective=_score)
    checkpoint.resume(baseline=lambda: {"parent": True, "score": 0.3})
    _steps(trained, 2)
    real_append = TrainingCheckpoint._append

    def killed(self, entry):
        raise SystemExit("killed")

    monkeypatch.setattr(TrainingCheckpoint, "_append", killed)
    with pytest.raises(SystemExit):
        checkpoint.end_epoch({"epoch": 1, "score": 0.6})
    monkeypatch.setattr(TrainingCheckpoint, "_append", real_append)
    assert [h["epoch"] for h in read_history(tmp_path)] == [0]  # best.npz is written, though

    again = _trained(seed=1)
    resumed = _checkpoint(tmp_path, again, objective=_score)
    # The baseline is logged already; rescore sees the restored epoch-1 model.
    assert resumed.resume(baseline=lambda: pytest.fail("epoch 0 is logged"),
                          rescore=lambda: {"score": 0.6}) == 1  # fmt: skip
    assert read_history(tmp_path) == [
        {"epoch": 0, "parent": True, "score": 0.3},
        {"epoch": 1, "recovered": True, "score": 0.6, "best": True},
    ]
    assert resumed.restore_best()["epoch"] == 1


def test_checkpoints_of_other_settings_or_versions_are_refused_with_what_to_do(tmp_path):
    trained = _trained()
    checkpoint = _checkpoint(tmp_path / "run", trained)
    checkpoint.resume()
    _steps(trained, 2)
    checkpoint.end_epoch({"epoch": 1})
    folder = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"its first has 2 variables of other shapes .* "
                       rf"not written with these settings. Delete {folder}"):  # fmt: skip
        _checkpoint(folder, _trained(units=5)).resume()
    with pytest.raises(CheckpointError, match=r"holds 2 optimizer steps, not whole epochs of 3"):
        _checkpoint(folder, _trained(), steps_per_epoch=3).resume()
    (folder / "last.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"last.npz: cannot load this checkpoint"):
        _checkpoint(folder, _trained()).resume()

    old = tmp_path / "old"
    old.mkdir()
    (old / "last.keras").write_bytes(b"")
    (old / "state.json").write_text('{"epochs_done": 3, "history": []}')
    with pytest.raises(CheckpointError) as refused:
        _checkpoint(old, _trained()).resume()
    assert str(refused.value) == (
        f"{old} holds a checkpoint of an older edge-caption (last.keras, state.json), which "
        "this version cannot resume: finish the run with the version that started it, or "
        f"delete {old} to train this stage from the start (the run's finished files are "
        "kept either way)"
    )


def test_only_the_writer_writes(tmp_path):
    trained = _trained()
    reader = _checkpoint(tmp_path / "run", trained, writer=False, objective=_score)
    assert reader.resume(baseline=lambda: {"score": 0.1}) == 0
    _steps(trained, 2)
    assert reader.end_epoch({"epoch": 1, "score": 0.2})["best"] is True
    assert not (tmp_path / "run").exists()
