"""Interrupted or failing writes leave no half file and keep the last good one; malformed
datasets get clear errors or one counted warning."""

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.errors import DatasetError
from edgecap.edge_runtime.evaluation.datasets import SPLIT_FILES, TOKEN_FILE, load_dataset
from edgecap.train.synthetic import generate


def test_failed_export_leaves_no_bundle_and_keeps_the_old_one(e2e, tmp_path, monkeypatch):
    from edgecap.export import exporter as bundle_mod

    target = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real = bundle_mod._convert_model

    def dies_on_the_step_model(model_format, role, *args):
        if role == "decoder_step":
            raise KeyboardInterrupt("simulated kill during export")
        return real(model_format, role, *args)

    monkeypatch.setattr(bundle_mod, "_convert_model", dies_on_the_step_model)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.export_bundle(e2e["run"], target, "fp32", parity_images=2)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the old bundle, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"epochs_done": 3})
    import edgecap.edge_runtime.atomic as atomic

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        write_json_atomic(target, {"epochs_done": 4})
    assert json.loads(target.read_text()) == {"epochs_done": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


@pytest.fixture
def small_dataset(tmp_path):
    generate(tmp_path / "d", 16, seed=1, image_size=32, progress=False)
    return tmp_path / "d"


def test_non_utf8_token_file_is_named(small_dataset):
    token_file = small_dataset / TOKEN_FILE
    token_file.write_bytes(token_file.read_bytes() + b"synth_00000.jpg#5\tcaf\xe9\n")
    with pytest.raises(DatasetError, match=rf"{TOKEN_FILE}: not UTF-8 text \(byte \d+\)"):
        load_dataset(small_dataset)


def test_malformed_and_empty_caption_lines_are_counted_once(small_dataset, caplog):
    token_file = small_dataset / TOKEN_FILE
    token_file.write_text(
        token_file.read_text() + "no tab here\nsynth_00001.jpg#5\t   \nsynth_00002.jpg\tno hash\n"
    )
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(small_dataset)
    warnings = [r.getMessage() for r in caplog.records if "malformed lines" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 3 malformed lines" in warnings[0]
    assert all(len(c) == 5 for c in dataset.captions.values())


def test_duplicate_and_crossed_split_ids(small_dataset):
    split = small_dataset / SPLIT_FILES["test"]
    ids = split.read_text().split()
    split.write_text("\n".join(ids + ids[:1]) + "\n")
    with pytest.raises(DatasetError, match=r"testImages\.txt: 1 duplicate image ids"):
        load_dataset(small_dataset)
    train_first = (small_dataset / SPLIT_FILES["train"]).read_text().split()[0]
    split.write_text("\n".join([*ids, train_first]) + "\n")
    with pytest.raises(
        DatasetError, match=rf"image {train_first} is in both the train and test splits"
    ):
        load_dataset(small_dataset)


def test_split_entry_without_captions(small_dataset):
    split = small_dataset / SPLIT_FILES["dev"]
    split.write_text(split.read_text() + "ghost.jpg\n")
    with pytest.raises(
        DatasetError,
        match=r"devImages\.txt: 1 images have no caption in Flickr8k\.token\.txt, e\.g\. ghost\.jpg",
    ):
        load_dataset(small_dataset)


def _enospc_under(monkeypatch, marker: str) -> None:
    """os.fsync raises ENOSPC for files whose path contains `marker` (atomic writes fsync
    their temporary file just before the rename)."""
    real_fsync = os.fsync

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds via /proc")


@needs_proc
def test_full_disk_during_export_keeps_the_old_bundle(e2e, tmp_path, monkeypatch):
    from edgecap.edge_runtime.errors import DiskFullError
    from edgecap.export import exporter as bundle_mod

    target = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    # The conversions are not under test: hand back the shipped files' bytes at once.
    monkeypatch.setattr(
        bundle_mod,
        "_convert_model",
        lambda model_format, role, *args: ((e2e["bundle"] / f"{role}.tflite").read_bytes(), []),
    )
    _enospc_under(monkeypatch, ".bundle.partial-")
    with pytest.raises(DiskFullError) as caught:
        bundle_mod.export_bundle(e2e["run"], target, "fp32", parity_images=2)
    assert str(caught.value) == (
        f"{target}: cannot write it: the disk is full (No space left on device); the previous "
        "bundle, if there was one, is kept. Free some space, then rerun the same command"
    )
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left


@needs_proc
def test_full_disk_during_caption_data_synth(tmp_path, monkeypatch, capsys):
    from edgecap.train import cli_data

    _enospc_under(monkeypatch, "Flickr8k.token.txt")
    assert cli_data.main(["synth", str(tmp_path / "d"), "--images", "8", "--size", "32"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"caption-data: error: {tmp_path / 'd'}: the disk is full (No space left on device); "
        "the files already written are whole. Free some space, then rerun the same command"
    )
    assert not (tmp_path / "d" / TOKEN_FILE).exists()
    assert [p.name for p in (tmp_path / "d").iterdir() if p.name.startswith(".")] == []


def test_missing_split_file_names_it_and_what_to_do(small_dataset, capsys):
    from edgecap.train import cli_data

    (small_dataset / SPLIT_FILES["dev"]).unlink()
    assert cli_data.main(["info", str(small_dataset)]) == 2
    assert capsys.readouterr().err == (
        f"caption-data: error: {small_dataset / SPLIT_FILES['dev']}: split file not found. "
        "A Flickr8k-layout dataset needs it; see README 'Data'.\n"
    )


def test_empty_and_non_utf8_split_files(small_dataset):
    split = small_dataset / SPLIT_FILES["test"]
    split.write_text("\n  \n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(small_dataset)
    assert str(caught.value) == f"{split}: the split file lists no images; one image id per line"
    split.write_bytes(b"synth_00014.jpg\ncaf\xe9.jpg\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(small_dataset)
    assert str(caught.value) == f"{split}: not UTF-8 text (byte 19); re-save it as UTF-8"


def _train_argv(data, tmp_path) -> list[str]:
    return ["--data", str(data), "--weights", "none", "--units", "8", "--embed-dim", "8",
            "--epochs", "1", "--out", str(tmp_path / "run"),
            "--feature-cache", str(tmp_path / "cache")]  # fmt: skip


def test_split_image_missing_stops_training_before_any_work(small_dataset, tmp_path, capsys):
    from edgecap.train import cli_train

    victim = load_dataset(small_dataset).splits["train"][3]
    (small_dataset / "Flicker8k_Dataset" / victim).unlink()
    assert cli_train.main(_train_argv(small_dataset, tmp_path)) == 2
    images = small_dataset / "Flicker8k_Dataset"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"caption-train: error: {images / victim}: image not found (1 of 16 split images are "
        f"missing). Put the Flickr8k images in {images}."
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing written yet


def test_corrupt_split_image_is_named_when_features_are_extracted(small_dataset, tmp_path, capsys):
    from edgecap.train import cli_train

    victim = small_dataset / "Flicker8k_Dataset" / load_dataset(small_dataset).splits["train"][5]
    victim.write_text("not a jpeg\n")
    assert cli_train.main(_train_argv(small_dataset, tmp_path)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"caption-train: error: {victim}: cannot decode image (cannot identify image file "
        f"'{victim}'); the file is corrupt or not an image"
    )


def test_ctrl_c_during_export_keeps_the_old_bundle_and_says_so(e2e, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys

    target = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], target)  # an older bundle at the target
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    command = [sys.executable, "-m", "edgecap.export.cli", str(e2e["run"]), "--quantize", "fp32"]
    process = subprocess.Popen(
        [*command, "--out", str(target)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # A suite started in the background by a non-interactive shell inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler: give Ctrl-C back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stderr:  # wait until the export has really started
        if "exporting tflite-fp32" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert (
        f"caption-export: interrupted; {target} was not written (an older bundle there is "
        "kept). Finished: none. Rerun the command to export it"
    ) in stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging folder left


def test_a_second_sigint_after_a_handled_ctrl_c_still_exits_130_with_the_message():
    import signal
    import subprocess
    import sys

    # What CI once saw from caption-export: the message printed, then death by SIGINT (-2).
    script = (
        "import os, signal, sys\n"
        "from edgecap.edge_runtime.errors import interrupted\n"
        "status = interrupted('tool: interrupted; rerun it')\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert (result.returncode, result.stderr) == (130, "tool: interrupted; rerun it\n")
