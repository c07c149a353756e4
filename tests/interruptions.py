"""Interruptions the resume tests inject into training, each at the point it names: a
Ctrl-C right after an epoch's checkpoint, and a kill between an epoch's checkpoint files
and its history line (train/checkpoint.py writes them in that order)."""

from __future__ import annotations

import pytest


def interrupt_fit_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """KeyboardInterrupt once fit has checkpointed epoch `epoch` (counted from 1)."""
    from edgecap.train import training

    real_callback = training._checkpoint_callback

    def interrupting_callback(checkpoint):
        callback = real_callback(checkpoint)
        original = callback.on_epoch_end

        def on_epoch_end(index, logs=None):
            original(index, logs)
            if index + 1 == epoch:
                raise KeyboardInterrupt(f"simulated Ctrl-C after epoch {epoch}")

        callback.on_epoch_end = on_epoch_end
        return callback

    monkeypatch.setattr(training, "_checkpoint_callback", interrupting_callback)


def kill_before_history_line(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """SystemExit after epoch `epoch`'s last.npz (and best.npz) are written, before its
    line in history.jsonl; the rerun's recovered line for that epoch goes through."""
    from edgecap.train.checkpoint import TrainingCheckpoint

    real_append = TrainingCheckpoint._append

    def killed_before_the_line(self, entry):
        if entry["epoch"] == epoch and not entry.get("recovered"):
            raise SystemExit("killed")
        real_append(self, entry)

    monkeypatch.setattr(TrainingCheckpoint, "_append", killed_before_the_line)
