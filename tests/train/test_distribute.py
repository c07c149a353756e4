"""`caption-train --distribute`: two MultiWorkerMirroredStrategy workers on localhost, and
MirroredStrategy over two logical CPUs, train what one device trains."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from interruptions import kill_before_history_line

from edgecap.train.checkpoint import CHECKPOINT_FILES, read_history
from edgecap.train.distribute import make_strategy, replica_rows
from edgecap.train.synthetic import generate
from edgecap.train.training import RUN_FILES

# A tiny lstm run without dropout: dropout masks are drawn per replica, so with dropout the
# replicas' runs are equally good, not equal. 48 images, 3 epochs of 12 steps of 16.
SETTINGS = dict(units=16, embed_dim=8, dropout=0.0, epochs=3, batch_size=16, keep="last")
# Summing over two replicas reorders float additions: the same loss to ~1e-6 here.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The data, the feature cache and a one-device run of SETTINGS."""
    from edgecap.train.decoders import DecoderConfig
    from edgecap.train.training import TrainConfig, train

    root = tmp_path_factory.mktemp("distribute")
    generate(root / "data", 48, seed=5, progress=False)
    decoder = DecoderConfig(units=16, embed_dim=8, dropout=0.0)
    config = TrainConfig(data=str(root / "data"), encoder="mobilenet_synth", decoder=decoder,
                         epochs=3, batch_size=16, keep="last", feature_cache=str(root / "cache"))  # fmt: skip
    train(config, root / "single", progress=False)
    return root


def _history(run) -> list[dict]:
    return read_history(run / "checkpoints")


def _assert_trained_alike(run, single_run) -> None:
    ours, theirs = _history(run), _history(single_run)
    assert [h["epoch"] for h in ours] == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.allclose([h[key] for h in ours], [h[key] for h in theirs],
                           rtol=LOSS_TOLERANCE, atol=0), key  # fmt: skip
    assert (run / "predictions.jsonl").read_text() == (single_run / "predictions.jsonl").read_text()


def _train_command(root, out) -> list[str]:
    return [sys.executable, "-m", "edgecap.train.cli_train", "--data", str(root / "data"),
            "--encoder", "mobilenet_synth", "--units", "16", "--embed-dim", "8", "--dropout", "0",
            "--epochs", "3", "--batch-size", "16", "--keep", "last",
            "--feature-cache", str(root / "cache"), "--out", str(out)]  # fmt: skip


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(root, out, attempt: str, command=None) -> list[subprocess.Popen]:
    """Two MultiWorkerMirroredStrategy workers of the tiny run (or of `command`) on fresh
    localhost ports."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        with open(root / f"{attempt}-worker-{index}.log", "w") as log:
            argv = [*(command or _train_command(root, out)), "--distribute", "multi-worker"]
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def _wait(processes: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            p.kill()


def test_two_workers_train_what_one_trains_and_the_bundle_captions_alike(single):
    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.edge_runtime.evaluation.datasets import load_dataset
    from edgecap.export.exporter import export_bundle

    out = single / "two-workers"
    codes = _wait(_start_workers(single, out, "two"))
    assert codes == [0, 0], (single / "two-worker-0.log").read_text()[-3000:]
    _assert_trained_alike(out, single / "single")
    # Worker 1 wrote nothing: the run folder holds the chief's files and no others.
    assert {p.name for p in out.iterdir()} == {*RUN_FILES, "checkpoints"}
    assert {p.name for p in (out / "checkpoints").iterdir()} <= set(CHECKPOINT_FILES)

    export_bundle(out, single / "bundle", "fp32", parity_images=6)
    dataset = load_dataset(single / "data")
    expected = [json.loads(line) for line in (single / "single" / "predictions.jsonl").open()]
    with Captioner.open(single / "bundle") as captioner:
        got = [captioner.caption(dataset.image_path(p["image"])).text for p in expected]
    assert got == [p["caption"] for p in expected]


@pytest.mark.slow  # two cluster starts: about a minute
def test_a_killed_worker_restarted_with_the_chief_goes_on_from_the_last_epoch(single):
    out = single / "killed"
    first = _start_workers(single, out, "first")
    try:
        last = out / "checkpoints" / "last.npz"
        deadline = time.monotonic() + 240
        while not last.exists() and time.monotonic() < deadline:
            assert all(p.poll() is None for p in first), "a worker stopped before epoch 1 ended"
            time.sleep(0.05)
        first[1].kill()  # worker 1 dies mid-run; the chief's collectives fail or wait
        time.sleep(2)
    finally:
        for p in first:
            p.kill()
            p.wait()
    done = _history(out)
    assert 1 <= len(done) < 3, "the kill came too late to test a resume"
    codes = _wait(_start_workers(single, out, "second"))
    assert codes == [0, 0], (single / "second-worker-0.log").read_text()[-3000:]
    history = _history(out)
    assert history[: len(done)] == done  # the finished epochs were not trained again
    _assert_trained_alike(out, single / "single")


MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgecap.train.cli_train import main
sys.exit(main(sys.argv[1:]))
"""


# slow: tens of seconds; the two-worker test covers the same replica split in make test
@pytest.mark.slow
def test_mirrored_over_two_devices_trains_what_one_trains(single):
    out = single / "mirrored"
    command = [sys.executable, "-c", textwrap.dedent(MIRRORED), *_train_command(single, out)[3:],
               "--distribute", "mirrored", "--devices", "/cpu:0,/cpu:1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device:CPU:1" in result.stderr  # MirroredStrategy's log: both devices in use
    _assert_trained_alike(out, single / "single")


# The same, SIGKILLed after epoch 2's last.npz is in place and before its history line.
MIRRORED_KILLED_BEFORE_THE_LINE = MIRRORED.replace(
    "from edgecap.train.cli_train",
    """
import os, signal
from edgecap.train.checkpoint import TrainingCheckpoint
real_append = TrainingCheckpoint._append
def killed_before_the_line(self, entry):
    if entry["epoch"] == 2 and not entry.get("recovered"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_append(self, entry)
TrainingCheckpoint._append = killed_before_the_line
from edgecap.train.cli_train""",
)


@pytest.mark.slow  # two mirrored runs: about 80 s
def test_the_replicated_epoch_killed_between_its_checkpoint_writes_ends_as_one_device(single):
    """The replicated epoch saves through the same checkpoint: killed between last.npz and
    the history line, the rerun goes on from the model and trains no epoch twice."""
    out = single / "mirrored-killed"
    flags = [*_train_command(single, out)[3:], "--distribute", "mirrored",
             "--devices", "/cpu:0,/cpu:1"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", MIRRORED_KILLED_BEFORE_THE_LINE, *flags],
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [h["epoch"] for h in _history(out)] == [1]
    resumed = subprocess.run([sys.executable, "-c", textwrap.dedent(MIRRORED), *flags],
                             capture_output=True, text=True, timeout=240)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 2/3" not in resumed.stdout and "Epoch 3/3" in resumed.stdout
    ours, theirs = _history(out), _history(single / "single")
    assert [h["epoch"] for h in ours] == [1, 2, 3]
    assert ours[1] == {"epoch": 2, "recovered": True}  # keep="last": nothing to score again
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.allclose([ours[0][key], ours[2][key]], [theirs[0][key], theirs[2][key]],
                           rtol=LOSS_TOLERANCE, atol=0), key  # fmt: skip
    assert (out / "predictions.jsonl").read_text() == (
        single / "single" / "predictions.jsonl"
    ).read_text()


def test_replica_rows_split_every_batch_between_the_replicas():
    batch = ({"tokens": np.arange(10)[:, None] * np.ones((1, 4), int)}, np.arange(10), np.ones(10))
    parts = list(replica_rows(iter([batch]), replicas=range(3), of=3))
    assert [p[1].tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert all(p[0]["tokens"].shape[1] == 4 for p in parts)  # the global batch's width
    # A worker holding replicas 2 and 3 of 4 gets those rows only, in replica order.
    assert [p[1].tolist() for p in replica_rows(iter([batch]), range(2, 4), 4)] == [[2, 6], [3, 7]]


def test_distribute_errors_say_what_to_do(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG is not set; every worker needs it"):
        make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        make_strategy("multi-worker")
    with pytest.raises(ValueError, match="must be one of none, mirrored, multi-worker"):
        make_strategy("parameter-server")


def test_mirrored_without_a_gpu_names_the_devices_flag():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(
        ValueError, match="sees no GPU here; list the devices to mirror over with --devices"
    ):
        make_strategy("mirrored")


def _finetune_command(root, out) -> list[str]:
    return [sys.executable, "-m", "edgecap.train.cli_train", "finetune", str(root / "single"),
            "--out", str(out), "--epochs", "2", "--train-blocks", "2", "--images-per-batch", "8",
            "--learning-rate", "1e-3", "--encoder-learning-rate", "1e-4", "--final-split", "none",
            "--feature-cache", str(root / "cache")]  # fmt: skip


def _assert_finetuned_alike(run, single_run) -> None:
    ours, theirs = _history(run), _history(single_run)
    assert [h["epoch"] for h in ours] == [0, 1, 2]
    assert np.allclose([h["loss"] for h in ours[1:]], [h["loss"] for h in theirs[1:]],
                       rtol=LOSS_TOLERANCE, atol=0)  # fmt: skip
    for key in ("dev_bleu4", "dev_cider_d"):
        assert np.allclose([h[key] for h in ours], [h[key] for h in theirs], atol=1e-6), key


@pytest.fixture(scope="module")
def finetuned_single(single):
    """`caption-train finetune` of the one-device run, on one device."""
    from edgecap.train.cli_train import main

    assert main(_finetune_command(single, single / "finetuned")[3:]) == 0
    return single / "finetuned"


def test_finetune_on_two_workers_trains_what_one_device_trains(single, finetuned_single):
    out = single / "finetune-two-workers"
    command = _finetune_command(single, out)
    codes = _wait(_start_workers(single, out, "finetune", command))
    assert codes == [0, 0], (single / "finetune-worker-0.log").read_text()[-3000:]
    _assert_finetuned_alike(out, finetuned_single)
    assert not list(out.glob(".worker-*"))  # worker 1 wrote no checkpoint of its own


def test_finetune_killed_between_its_checkpoint_writes_ends_as_an_uninterrupted_run(
    single, finetuned_single, monkeypatch
):
    """Killed after epoch 2's last.npz (and best.npz) are in place but before its history
    line, the rerun scores epoch 2 on dev again instead of training it twice, and keeps
    the encoder and decoder that the uninterrupted run keeps."""
    import keras

    from edgecap.train.cli_train import main

    out = single / "finetune-killed"
    kill_before_history_line(monkeypatch, 2)
    with pytest.raises(SystemExit):
        main(_finetune_command(single, out)[3:])
    monkeypatch.undo()
    assert [h["epoch"] for h in _history(out)] == [0, 1]
    assert not (out / "decoder.keras").exists()

    assert main(_finetune_command(single, out)[3:]) == 0
    ours, theirs = _history(out), _history(finetuned_single)
    assert [h["epoch"] for h in ours] == [0, 1, 2] and ours[2]["recovered"] is True
    assert np.isclose(ours[1]["loss"], theirs[1]["loss"], rtol=LOSS_TOLERANCE, atol=0)
    for key in ("dev_bleu4", "dev_cider_d"):
        assert np.allclose([h[key] for h in ours], [h[key] for h in theirs], atol=1e-6), key
    assert [h.get("best") for h in ours] == [h.get("best") for h in theirs]
    for name in ("encoder.keras", "decoder.keras"):
        kept, expected = (keras.models.load_model(run / name, safe_mode=True, compile=False)
                          for run in (out, finetuned_single))  # fmt: skip
        for a, b in zip(kept.get_weights(), expected.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # the two-worker test covers the same replica split in make test
def test_finetune_mirrored_over_two_devices_trains_what_one_device_trains(single, finetuned_single):
    out = single / "finetune-mirrored"
    command = [sys.executable, "-c", textwrap.dedent(MIRRORED), *_finetune_command(single, out)[3:],
               "--distribute", "mirrored", "--devices", "/cpu:0,/cpu:1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_finetuned_alike(out, finetuned_single)


@pytest.mark.slow  # two fine-tuning runs, one of them mirrored
def test_finetune_with_an_average_mirrored_keeps_what_one_device_keeps(single):
    """The moving average (--ema-decay) lives beside mirrored weights: its updates and the
    dev scores of the averaged and the live weights match one device's run."""
    from edgecap.train.cli_train import main

    one_device = single / "finetune-average"
    assert main([*_finetune_command(single, one_device)[3:], "--ema-decay", "0.9"]) == 0
    out = single / "finetune-average-mirrored"
    command = [sys.executable, "-c", textwrap.dedent(MIRRORED), *_finetune_command(single, out)[3:],
               "--ema-decay", "0.9", "--distribute", "mirrored", "--devices", "/cpu:0,/cpu:1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_finetuned_alike(out, one_device)
    ours, theirs = _history(out), _history(one_device)
    for key in ("live_dev_bleu4", "live_dev_cider_d"):
        assert np.allclose([h[key] for h in ours], [h[key] for h in theirs], atol=1e-6), key
