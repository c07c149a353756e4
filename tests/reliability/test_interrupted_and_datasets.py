"""Interrupted or failing writes leave no half file and keep the last good one; malformed
datasets get clear errors or one counted warning."""

import errno
import json
import logging
import shutil

import pytest

from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.errors import DatasetError
from edgecap.train.flickr8k import SPLIT_FILES, TOKEN_FILE, load_dataset
from edgecap.train.synthetic import generate


def test_failed_export_leaves_no_bundle_and_keeps_the_old_one(e2e, tmp_path, monkeypatch):
    from edgecap.export import bundle as bundle_mod

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
