"""Interruptions the resume tests inject into training, each at the point it names: right
after fit checkpoints an epoch, and between an epoch's checkpoint files and its history
line (train/checkpoint.py writes them in that order). The tests in-process raise there;
tests/reliability/train_driver.py pauses there until the test kills it."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def fit_callback_acting_after_epoch(epoch: int, act: Callable[[], None]) -> Callable:
    """A stand-in for training._checkpoint_callback that calls `act` once fit has
    checkpointed epoch `epoch` (counted from 1)."""
    from edgecap.train import training

    real_callback = training._checkpoint_callback

    def checkpoint_callback(checkpoint):
        callback = real_callback(checkpoint)
        original = callback.on_epoch_end

        def on_epoch_end(index, logs=None):
            original(index, logs)
            if index + 1 == epoch:
                act()

        callback.on_epoch_end = on_epoch_end
        return callback

    return checkpoint_callback


def append_acting_before_history_line(epoch: int, act: Callable[[], None]) -> Callable:
    """A stand-in for TrainingCheckpoint._append that calls `act` after epoch `epoch`'s
    last.npz (and best.npz) are written, before its history line; the rerun's recovered
    line for that epoch goes through."""
    from edgecap.train.checkpoint import TrainingCheckpoint

    real_append = TrainingCheckpoint._append

    def append(self, entry):
        if entry["epoch"] == epoch and not entry.get("recovered"):
            act()
        real_append(self, entry)

    return append


def interrupt_fit_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """KeyboardInterrupt once fit has checkpointed epoch `epoch`."""
    from edgecap.train import training

    def ctrl_c() -> None:
        raise KeyboardInterrupt(f"simulated Ctrl-C after epoch {epoch}")

    callback = fit_callback_acting_after_epoch(epoch, ctrl_c)
    monkeypatch.setattr(training, "_checkpoint_callback", callback)


def kill_before_history_line(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """SystemExit between epoch `epoch`'s checkpoint files and its history line."""
    from edgecap.train.checkpoint import TrainingCheckpoint

    def kill() -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(
        TrainingCheckpoint, "_append", append_acting_before_history_line(epoch, kill)
    )
