"""The one checkpoint of every trainer: fit, the replicated epoch, finetune and SCST.

    RUN/checkpoints/last.npz       every variable of what trains (the models and their
                                   optimizers) after the last finished epoch
    RUN/checkpoints/best.npz       the models' variables at the epoch the run's rule keeps
    RUN/checkpoints/history.jsonl  one JSON object per finished epoch, appended (with
                                   the process's peak resident memory so far)

How far a run got is read from last.npz alone: the restored optimizer's step count over
the steps of an epoch. Nothing writes a counter beside it. After each epoch the trainer
calls `end_epoch`, which writes last.npz, then best.npz when the epoch beats every logged
one by the run's rule, then appends the epoch's history line. Both .npz files are written
atomically and the line is appended with fsync, so a kill leaves the epoch's checkpoint
or the one before, never half of one. A kill after last.npz and before the line leaves the
model an epoch ahead of the history: `resume` logs that epoch again from the restored
model (the trainer scores it anew) and decides the best copy again, so the rerun ends
where an uninterrupted run ends. History lines beyond what last.npz holds (a hand edit, a
copy from another run) are dropped, never believed.

The variables are stored as plain arrays, by position within each named object, and
read back with `allow_pickle=False`; a count or shape that does not match the objects
being restored is refused as a checkpoint of other settings. The progress optimizer's
step count is also stored under its own key, in the same file, so that `saved_steps`
(tests, tools) reads it without building the models; resuming reads the restored variable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecap.edge_runtime.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

LAST, BEST, HISTORY = "last.npz", "best.npz", "history.jsonl"
CHECKPOINT_FILES = (LAST, BEST, HISTORY)
# What the checkpoints of edge-caption before this class left: fit's and SCST's
# last.keras / best.keras / state.json (adopted: _adopt_keras_checkpoint), finetune's
# tf.train.Checkpoint folders last/ and best/ (refused: _refuse_old_checkpoints).
OLD_CHECKPOINT_FILES = ("last.keras", "best.keras", "state.json", "last", "best")

Objective = Callable[[dict], float]
WriteGuard = Callable[[Path], contextlib.AbstractContextManager]


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class CheckpointError(ValueError):
    """A checkpoint folder this run cannot go on from; the message says what to do."""


def _no_guard(path: Path) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def read_history(folder: str | Path) -> list[dict]:
    """The epochs logged in `folder`/history.jsonl, in order; [] without the file. A line
    that is not a JSON object (a kill in the middle of an append) ends the history there."""
    path = Path(folder) / HISTORY
    if not path.exists():
        return []
    history = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int):
            log.warning("%s: line %d is not an epoch's entry; reading the history up to it",
                        path, number)  # fmt: skip
            break
        history.append(entry)
    return history


def saved_steps(folder: str | Path, optimizer: str) -> int:
    """The step count of the optimizer stored as `optimizer` in `folder`/last.npz, without
    building anything: what a resume would read (0 without a checkpoint)."""
    path = Path(folder) / LAST
    if not path.exists():
        return 0
    with np.load(path, allow_pickle=False) as arrays:
        return int(arrays[f"{optimizer}/steps"])


class TrainingCheckpoint:
    """The checkpoint folder of one run: `trained` (name -> model or optimizer) saved
    after every epoch, `kept` (the models' names) as the best copy, progress from the
    step count of `optimizer` (the name of one of `trained`).

    `objective` is the run's rule for the best copy: an epoch's history entry -> a score,
    higher is better, -inf for an epoch that may not be kept; None keeps no best copy.
    Only a writer (the chief of several workers) writes; the others restore.
    """

    def __init__(
        self,
        folder: str | Path,
        trained: Mapping[str, Any],
        kept: Sequence[str],
        optimizer: str,
        steps_per_epoch: int,
        objective: Objective | None = None,
        writer: bool = True,
        guard: WriteGuard = _no_guard,
    ) -> None:
        self.folder = Path(folder)
        self.trained, self.kept = dict(trained), tuple(kept)
        self.optimizer, self.steps_per_epoch = optimizer, steps_per_epoch
        self.objective, self.writer, self.guard = objective, writer, guard
        self.history: list[dict] = []
        self.epochs_done = 0

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def best(self) -> Path:
        return self.folder / BEST

    def resume(
        self,
        baseline: Callable[[], dict] | None = None,
        rescore: Callable[[], dict] | None = None,
    ) -> int:
        """Restore last.npz, if there is one, into the trained objects; returns the epochs
        done (also in `epochs_done`), with `history` trimmed to them.

        `baseline`: the entry of epoch 0 (the model trained from, as it was), logged first
        when the history lacks it; it is called before anything is restored, so it sees the
        objects as they were built. `rescore`: the scores of the restored epoch, for the
        epoch a kill left unlogged (see the module's docstring).
        """
        if self.writer:
            self._remove_stale_temp_files()
            self._adopt_keras_checkpoint()
        self._refuse_old_checkpoints()
        on_disk = read_history(self.folder)
        logged = list(on_disk)
        if baseline is not None and not any(h["epoch"] == 0 for h in logged):
            logged.insert(0, {"epoch": 0, **baseline()})
        done = self._restore_last() if self.last.exists() else 0
        history = [h for h in logged if h["epoch"] <= done]
        epochs = {h["epoch"] for h in history}
        # Epochs before the last one only go missing by hand: they keep their place.
        history += [{"epoch": e, "recovered": True} for e in range(1, done) if e not in epochs]
        history.sort(key=lambda h: h["epoch"])
        self.history, self.epochs_done = history, done
        if history != on_disk:
            self._rewrite_history()
        if done and done not in epochs:
            log.warning(
                "%s holds %d finished epochs but %s logs %d (the run was stopped between "
                "the two checkpoint writes); going on from the model",
                self.last, done, self.folder / HISTORY, done - 1,
            )  # fmt: skip
            self._log({"epoch": done, "recovered": True, **(rescore() if rescore else {})})
        return done

    def end_epoch(self, entry: dict) -> dict:
        """Save a finished epoch: last.npz, best.npz if `entry` (its history line, with
        "epoch") beats every logged epoch, then the line, with the process's peak memory
        so far ("peak_memory_mb", the cost docs/flickr8k.md reports per recipe). Returns
        the entry as logged."""
        self._save(self.last, self.trained)
        self.epochs_done = entry["epoch"]
        return self._log({**entry, "peak_memory_mb": peak_memory_mb()})

    def restore_best(self) -> dict | None:
        """Load best.npz into the kept models; returns the kept epoch's history entry, or
        None when no epoch was kept as best (the last one, or the one trained from, stands)."""
        entries = [h for h in self.history if h.get("best")]
        if not entries or not self.best.exists():
            return None
        self._load(self.best, {name: self.trained[name] for name in self.kept})
        return entries[-1]

    def _log(self, entry: dict) -> dict:
        if self._beats_history(entry):
            self._save(self.best, {name: self.trained[name] for name in self.kept})
            entry = {**entry, "best": True}
        if self.writer:
            self._append(entry)
        self.history.append(entry)
        return entry

    def _append(self, entry: dict) -> None:
        """One line at the end of history.jsonl, on disk before this returns."""
        path = self.folder / HISTORY
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.guard(path), open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _beats_history(self, entry: dict) -> bool:
        if self.objective is None:
            return False
        score = self.objective(entry)
        return score > -math.inf and score > max(map(self.objective, self.history),
                                                 default=-math.inf)  # fmt: skip

    def _save(self, path: Path, objects: Mapping[str, Any]) -> None:
        if not self.writer:
            return
        arrays = {}
        for name, obj in objects.items():
            for index, variable in enumerate(obj.variables):
                arrays[f"{name}/{index:05d}"] = np.asarray(variable)
            if name == self.optimizer:  # readable without building it (saved_steps)
                arrays[f"{name}/steps"] = np.asarray(obj.iterations, np.int64)
        with self.guard(path), atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)

    def _adopt_keras_checkpoint(self) -> None:
        """Go on from a checkpoint of fit or SCST before this class: best.keras, state.json
        and last.keras (the model with its optimizer) become best.npz, history.jsonl and
        last.npz, in that order, so that until last.npz is in place a rerun adopts them
        again; the old files are left as they are. A Keras file loads with its variables in
        the order a fresh build has them, and a mismatch is refused on restore. Finetune's
        old tf.train.Checkpoint folders are not adopted (_refuse_old_checkpoints)."""
        import keras

        old = self.folder / "last.keras"
        if self.last.exists() or not old.exists() or len(self.kept) != 1:
            return
        (model,) = self.kept
        log.info("%s: a checkpoint of an earlier version; rewriting it as %s", old, LAST)

        def adopt(source: str, target: Path, optimizer: bool) -> None:
            if not (self.folder / source).exists():
                return
            try:
                saved = keras.models.load_model(self.folder / source, safe_mode=True)
            except Exception as exc:  # Keras raises several types for a damaged zip or config
                raise CheckpointError(
                    f"{self.folder / source}: cannot load this checkpoint of an earlier "
                    f"version ({exc}); delete {self.folder} to train from the start"
                ) from None
            self._save(target, {model: saved, **({self.optimizer: saved.optimizer}
                                                 if optimizer else {})})  # fmt: skip

        adopt("best.keras", self.best, optimizer=False)
        state = self.folder / "state.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            self.history = [h for h in json.loads(state.read_text(encoding="utf-8"))["history"]
                            if isinstance(h, dict) and isinstance(h.get("epoch"), int)]  # fmt: skip
        self._rewrite_history()
        self.history = []
        adopt("last.keras", self.last, optimizer=True)

    def _load(self, path: Path, objects: Mapping[str, Any]) -> None:
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
        except (OSError, ValueError, EOFError) as exc:
            raise CheckpointError(
                f"{path}: cannot load this checkpoint ({exc}); delete {self.folder} to "
                "train from the start"
            ) from None
        for name, obj in objects.items():
            variables = obj.variables
            stored = sorted(k for k in arrays if k.startswith(f"{name}/") and k[-5:].isdigit())
            shapes = [tuple(arrays[k].shape) for k in stored]
            if shapes != [tuple(v.shape) for v in variables]:
                raise CheckpointError(
                    f"{path}: its {name} has {len(stored)} variables of other shapes than "
                    f"this run's {len(variables)}; it was not written with these settings. "
                    f"Delete {self.folder} to train from the start"
                )
            for variable, key in zip(variables, stored, strict=True):
                variable.assign(arrays[key])

    def _restore_last(self) -> int:
        self._load(self.last, self.trained)
        steps = int(np.asarray(self.trained[self.optimizer].iterations))
        done, rest = divmod(steps, self.steps_per_epoch)
        if rest:
            raise CheckpointError(
                f"{self.last}: holds {steps} optimizer steps, not whole epochs of "
                f"{self.steps_per_epoch}; it was not written with these settings. Delete "
                f"{self.folder} to train from the start"
            )
        return done

    def _rewrite_history(self) -> None:
        if not self.writer:
            return
        path = self.folder / HISTORY
        with self.guard(path):
            write_text_atomic(path, "".join(json.dumps(h) + "\n" for h in self.history))

    def _refuse_old_checkpoints(self) -> None:
        if self.last.exists() or not self.folder.is_dir():
            return
        old = sorted(p.name for p in self.folder.iterdir() if p.name in OLD_CHECKPOINT_FILES)
        if old:
            raise CheckpointError(
                f"{self.folder} holds a checkpoint of an older edge-caption ({', '.join(old)}), "
                "which this version cannot resume: finish the run with the version that "
                f"started it, or delete {self.folder} to train this stage from the start "
                "(the run's finished files are kept either way)"
            )

    def _remove_stale_temp_files(self) -> None:
        """Delete the temporary files of writes that a kill interrupted: SIGKILL stops
        atomic_path before it can clean up. One process writes a run's checkpoints, so any
        such file is a leftover, never another writer's work in progress."""
        if not self.folder.is_dir():
            return
        stale = [p for name in CHECKPOINT_FILES for p in self.folder.glob(f".{name}.*")]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("removed %d temporary file(s) left by an interrupted run", len(stale))
