"""Killing caption-train (SIGKILL, SIGINT) at any point, or filling the disk under it, loses
at most the work in progress: every file on disk stays whole, and rerunning the same command
resumes from the last checkpoint (or the last feature shard) and finishes the run."""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecap.edge_runtime.errors import DiskFullError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.train import features as features_mod
from edgecap.train.checkpoint import read_history, saved_steps
from edgecap.train.synthetic import generate

DRIVER = Path(__file__).with_name("train_driver.py")
DEADLINE_S = 120  # generous: the machine is shared, and these only bound a wait
EPOCHS, BATCH = 3, 32
REAL_FSYNC = os.fsync


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed") / "data"
    generate(root, 40, seed=4, progress=False)  # 30 train images, 150 captions
    return root


def _args(data: Path, run: Path, cache: Path, epochs: int = EPOCHS) -> list[str]:
    return ["--data", str(data), "--weights", "none", "--decoder", "lstm", "--units", "16",
            "--embed-dim", "8", "--epochs", str(epochs), "--batch-size", str(BATCH),
            "--out", str(run), "--feature-cache", str(cache)]  # fmt: skip


def _steps_per_epoch(data: Path) -> int:
    dataset = load_dataset(data)
    return math.ceil(sum(len(c) for _, c in dataset.split_items("train")) / BATCH)


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_trainer_outlives_its_test():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:  # a failed assertion left it paused or running
            proc.kill()
            proc.wait()


class Trainer:
    """One caption-train process, its output in files (a pipe nobody reads could fill up)."""

    def __init__(self, tmp: Path, args: list[str], pause: str = "", shard_size: int = 0):
        self.tmp, self.paused = tmp, tmp / f"paused-{time.monotonic_ns()}"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "EDGECAP_TEST_PAUSED": str(self.paused)}
        env.pop("EDGECAP_TEST_PAUSE", None)
        if pause:
            env["EDGECAP_TEST_PAUSE"] = pause
        if shard_size:
            env["EDGECAP_TEST_SHARD_SIZE"] = str(shard_size)
        self.out, self.err = self.paused.with_suffix(".out"), self.paused.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), *args], stdout=out, stderr=err, env=env
            )
        STARTED.append(self.proc)

    def wait_until(self, ready, what: str) -> None:
        """Poll `ready()` until it holds; fail if the trainer exits or the deadline passes."""
        end = time.monotonic() + DEADLINE_S
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"caption-train exited ({self.proc.returncode}) before {what}:\n"
                            f"{self.stderr()[-3000:]}")  # fmt: skip
            if time.monotonic() > end:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"no {what} after {DEADLINE_S} s:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_paused(self) -> None:
        self.wait_until(self.paused.exists, "pause point")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=DEADLINE_S)

    def finish(self) -> int:
        return self.proc.wait(timeout=DEADLINE_S * 3)

    def stderr(self) -> str:
        return self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()


def _history(run: Path) -> list[dict]:
    return read_history(run / "checkpoints")


def _epochs_logged(run: Path) -> int:
    return max((h["epoch"] for h in _history(run)), default=0)


def _checkpoint_epochs(run: Path, steps_per_epoch: int) -> int:
    """How many epochs last.npz holds, from its optimizer's step count."""
    steps = saved_steps(run / "checkpoints", "optimizer")
    assert steps % steps_per_epoch == 0, steps
    return steps // steps_per_epoch


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _assert_finished(run: Path, trainer: Trainer, steps_per_epoch: int) -> None:
    assert trainer.finish() == 0, trainer.stderr()[-3000:]
    assert "test split: split test, images 5" in trainer.stdout()
    assert _checkpoint_epochs(run, steps_per_epoch) == EPOCHS
    assert [h["epoch"] for h in _history(run)] == list(range(1, EPOCHS + 1))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 5 and "bleu4" in metrics
    assert (run / "decoder.keras").is_file()
    assert _hidden(run) == [] and _hidden(run / "checkpoints") == []  # no temp file left


def test_killed_at_every_stage_then_the_same_command_finishes_and_exports(data, tmp_path):
    """One run, stopped five times, each rerun of the same command going on from the last:
    SIGKILL during feature extraction, SIGKILL after an epoch, Ctrl-C and then SIGKILL in
    the middle of writing last.npz, SIGKILL between last.npz and its history line. Then it
    finishes, trains no epoch twice, and exports."""
    import keras

    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.export.exporter import export_bundle
    from edgecap.train.encoders import get_encoder_spec

    run, cache = tmp_path / "run", tmp_path / "cache"
    args, steps = _args(data, run, cache), _steps_per_epoch(data)

    # 1. During feature extraction (shards of 8 images): the finished shards are whole.
    first = Trainer(tmp_path, args, pause="shard:2", shard_size=8)
    first.wait_paused()
    assert first.kill() == -signal.SIGKILL
    (folder,) = cache.iterdir()  # the train split's cache entry
    assert sorted(p.name for p in folder.iterdir()) == ["shard_00000.npy", "shard_00001.npy"]
    for shard in folder.iterdir():
        array = np.load(shard, allow_pickle=False)
        assert array.ndim == 2 and len(array) == 8
    assert not (run / "config.json").exists() and _history(run) == []

    # 2. The rerun keeps those shards; killed once the history logs a finished epoch.
    second = Trainer(tmp_path, args, pause="epoch:1", shard_size=8)
    second.wait_until(lambda: _epochs_logged(run) >= 1, "a history with 1 epoch done")
    second.kill()
    assert f"INFO resuming feature extraction: 2 of 4 shards already in {folder}" in second.stderr()
    assert [h["epoch"] for h in _history(run)] == [1]
    assert _checkpoint_epochs(run, steps) == 1
    assert not (run / "decoder.keras").exists() and not (run / "metrics.json").exists()

    # 3. Resumed from epoch 1; Ctrl-C half-way through writing epoch 2's last.npz: a clean
    #    exit that says where the next run starts, and the temporary file is cleaned up.
    third = Trainer(tmp_path, args, pause="last-npz:1", shard_size=8)
    third.wait_paused()
    assert third.kill(signal.SIGINT) == 130
    assert f"INFO resuming {run} from epoch 1 of {EPOCHS}" in third.stderr()
    assert "Epoch 1/3" not in third.stdout() and "Traceback" not in third.stderr()
    assert third.stderr().rstrip().splitlines()[-1] == (
        f"caption-train: interrupted; rerun the same command to resume from epoch 1 of {EPOCHS}"
    )
    assert _hidden(run / "checkpoints") == []
    assert _epochs_logged(run) == 1 and _checkpoint_epochs(run, steps) == 1

    # 4. The same point with SIGKILL, which nothing can catch: the half-written temp stays.
    fourth = Trainer(tmp_path, args, pause="last-npz:1", shard_size=8)
    fourth.wait_paused()
    fourth.kill()
    temp = _hidden(run / "checkpoints")
    assert len(temp) == 1 and temp[0].startswith(".last.npz.")  # the half-written new file
    assert _epochs_logged(run) == 1 and _checkpoint_epochs(run, steps) == 1

    # 5. That leftover is cleared; killed after epoch 3's last.npz is in place but before
    #    its history line: the model is now one epoch ahead of the history.
    fifth = Trainer(tmp_path, args, pause="history:3", shard_size=8)
    fifth.wait_paused()
    fifth.kill()
    assert "INFO removed 1 temporary file(s) left by an interrupted run" in fifth.stderr()
    assert _epochs_logged(run) == 2 and _checkpoint_epochs(run, steps) == 3

    # 6. The plain command trusts the model, trains no epoch twice, and finishes.
    last = Trainer(tmp_path, args, shard_size=8)
    _assert_finished(run, last, steps)
    checkpoints = run / "checkpoints"
    assert (
        f"WARNING {checkpoints / 'last.npz'} holds 3 finished epochs but "
        f"{checkpoints / 'history.jsonl'} logs 2 (the run was stopped between the two "
        "checkpoint writes); going on from the model"
    ) in last.stderr()
    assert f"INFO resuming {run} from epoch 3 of {EPOCHS}" in last.stderr()
    assert "Epoch 3/3" not in last.stdout()  # nothing left to train
    # Logged again from the model, with its dev scores: the kept epoch is chosen as ever.
    recovered = _history(run)[2]
    assert {k: v for k, v in recovered.items() if k in ("epoch", "recovered")} == {
        "epoch": 3,
        "recovered": True,
    }
    assert set(recovered) <= {"epoch", "recovered", "dev_bleu4", "dev_cider_d", "best"}
    assert "dev_cider_d" in recovered

    # The stitched features equal one uninterrupted pass of the run's own encoder.
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "info.json"]
    dataset = load_dataset(data)
    encoder = keras.models.load_model(run / "encoder.keras", safe_mode=True, compile=False)
    expected = features_mod._compute(
        dataset, dataset.splits["train"], get_encoder_spec("mobilenet_synth").preprocessing,
        encoder, 64,
    )  # fmt: skip
    np.testing.assert_allclose(
        np.load(folder / "features.npy", allow_pickle=False), expected, rtol=1e-4, atol=1e-5
    )

    # And the finished run exports to a bundle that captions.
    manifest = export_bundle(run, tmp_path / "bundle", "int8", parity_images=2)
    assert manifest["vocab"]["size"] == len(json.loads((run / "vocab.json").read_text())["tokens"])
    with Captioner.open(tmp_path / "bundle") as captioner:
        assert isinstance(
            captioner.caption(dataset.image_path(dataset.splits["test"][0])).text, str
        )


def _fail_fsync_for(monkeypatch, name: str, after: int, code: int = errno.ENOSPC) -> list[str]:
    """Make os.fsync raise `code` (ENOSPC) for the temp files of `name`, after `after` good writes.

    fsync is the last step of atomic_path before its rename; failing there is what a full
    disk looks like when the data sat in the page cache until then. Returns the paths hit.
    """
    real_fsync, seen, hit = os.fsync, [0], []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if Path(path).name.startswith(f".{name}."):
            seen[0] += 1
            if seen[0] > after:
                hit.append(path)
                raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hit


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_full_disk_at_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch, capsys):
    from edgecap.train import cli_train

    run, cache = tmp_path / "run", tmp_path / "cache"
    hit = _fail_fsync_for(monkeypatch, "last.npz", after=1)
    assert cli_train.main(_args(data, run, cache)) == 2
    assert len(hit) == 1  # the fault fired once, at epoch 2's checkpoint
    last = run / "checkpoints" / "last.npz"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"caption-train: error: {last}: cannot write it: the disk is full (No space left on "
        "device); the previous last.npz, if there was one, is kept. Free some space, then "
        f"rerun the same command to resume from epoch 1 of {EPOCHS}"
    )
    assert _epochs_logged(run) == 1
    assert _checkpoint_epochs(run, _steps_per_epoch(data)) == 1  # epoch 1's, still loadable
    assert _hidden(run / "checkpoints") == []


def _tiny_extraction(tmp_path, monkeypatch):
    """(extract, dataset, spec, encoder): feature extraction of 18 images in 8-image shards,
    with the mean colour as a cheap, exact stand-in encoder."""
    import dataclasses

    from edgecap.train.encoders import get_encoder_spec

    generate(tmp_path / "data", 24, seed=3, image_size=32, progress=False)  # 18 train images
    dataset = load_dataset(tmp_path / "data")
    spec = dataclasses.replace(get_encoder_spec("mobilenet_synth"), input_size=32)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"stand-in weights")
    monkeypatch.setattr(features_mod, "SHARD_SIZE", 8)

    def encoder(batch, training=False):
        return batch.mean(axis=(1, 2))

    def extract():
        return features_mod.extract_features(
            dataset, "train", spec, str(weights), encoder, tmp_path / "cache", 8, False
        )

    return extract, dataset, spec, encoder


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_full_disk_during_feature_extraction_keeps_the_finished_shards(tmp_path, monkeypatch):
    extract, dataset, spec, encoder = _tiny_extraction(tmp_path, monkeypatch)

    hit = _fail_fsync_for(monkeypatch, "shard_00001.npy", after=0)
    with pytest.raises(DiskFullError) as caught:
        extract()
    (folder,) = (tmp_path / "cache").iterdir()
    assert str(caught.value) == (
        f"{folder / 'shard_00001.npy'}: cannot write it: the disk is full (No space left on "
        "device); the previous shard_00001.npy, if there was one, is kept. Free some space, "
        "then rerun the same command: feature extraction goes on from the shards already written"
    )
    assert len(hit) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["shard_00000.npy"]  # whole, kept

    monkeypatch.setattr(os, "fsync", REAL_FSYNC)  # space freed
    result = extract()
    expected = features_mod._compute(
        dataset, dataset.splits["train"], spec.preprocessing, encoder, 8
    )
    np.testing.assert_allclose(result, expected)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_broken_file(data, tmp_path):
    """Kill the same run at random moments, several times, then let it finish.

    After every kill, each file a reader would open (the run's JSON and Keras files, the
    checkpoint, the feature cache) must load. Random, so each run probes other moments; the seed is printed.
    """
    import keras

    seed = random.randrange(1 << 30)
    print("random kill seed:", seed)
    rng = random.Random(seed)
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = _args(data, run, cache, epochs=EPOCHS)

    timed = Trainer(
        tmp_path, _args(data, tmp_path / "timed", tmp_path / "timed-cache"), shard_size=8
    )
    start = time.monotonic()
    assert timed.finish() == 0
    duration = time.monotonic() - start

    for _ in range(6):
        trainer = Trainer(tmp_path, args, shard_size=8)
        time.sleep(rng.uniform(0.5, duration))  # a random moment: the point of this test
        trainer.kill()
        for path in [*run.glob("*"), *run.glob("checkpoints/*"), *cache.glob("*/*")]:
            if path.name.startswith(".") or path.is_dir():
                continue  # temp files: never read, cleared by the next run
            if path.suffix in (".json", ".jsonl"):
                for line in path.read_text().splitlines() if path.suffix == ".jsonl" else []:
                    json.loads(line)
                if path.suffix == ".json":
                    json.loads(path.read_text())
            elif path.suffix == ".keras":
                keras.models.load_model(path, safe_mode=True, compile=False)
            elif path.suffix == ".npy":
                np.load(path, allow_pickle=False)
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as arrays:
                    assert all(arrays[key].size >= 0 for key in arrays.files)
    _assert_finished(run, Trainer(tmp_path, args, shard_size=8), _steps_per_epoch(data))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
@pytest.mark.parametrize(
    "code, what, fix",
    [
        (
            errno.EROFS,
            "the file system is read-only (Read-only file system)",
            "Write somewhere else",
        ),
        (
            errno.EACCES,
            "permission denied (Permission denied)",
            "Make the folder writable, or write somewhere else",
        ),
    ],
)
def test_unwritable_cache_is_named_with_what_to_do(tmp_path, monkeypatch, code, what, fix):
    """Root ignores permission bits, so the failure is injected where a write would fail."""
    from edgecap.edge_runtime.errors import WriteError

    extract, *_ = _tiny_extraction(tmp_path, monkeypatch)
    _fail_fsync_for(monkeypatch, "shard_00000.npy", after=0, code=code)
    with pytest.raises(WriteError) as caught:
        extract()
    (folder,) = (tmp_path / "cache").iterdir()
    assert str(caught.value) == (
        f"{folder / 'shard_00000.npy'}: cannot write it: {what}; the previous shard_00000.npy, "
        f"if there was one, is kept. {fix}, then rerun the same command: feature extraction "
        "goes on from the shards already written"
    )
    assert not list(folder.iterdir())  # no temporary file left
