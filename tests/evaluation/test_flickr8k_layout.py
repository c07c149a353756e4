import logging
import shutil

import pytest

from edgecap.edge_runtime.errors import DatasetError
from edgecap.edge_runtime.evaluation.datasets import IMAGES_DIR, SPLIT_FILES, load_dataset
from edgecap.train.synthetic import generate


def test_real_flickr8k_annotations(flickr8k_annotations, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(flickr8k_annotations, require_images=False)
    assert {s: len(ids) for s, ids in dataset.splits.items()} == {
        "train": 6000,
        "dev": 1000,
        "test": 1000,
    }
    assert all(len(dataset.captions[i]) == 5 for ids in dataset.splits.values() for i in ids)
    assert dataset.unsplit_ids == 93
    unsplit_warnings = [r for r in caplog.records if "in no split" in r.getMessage()]
    assert len(unsplit_warnings) == 1  # once, with a count, not once per id
    assert "93 image ids" in unsplit_warnings[0].getMessage()
    assert "2258277193_586949ec62.jpg.1" in unsplit_warnings[0].getMessage()


def test_missing_split_file_is_named(flickr8k_annotations, tmp_path):
    copy = tmp_path / "flickr8k"
    shutil.copytree(flickr8k_annotations, copy)
    (copy / SPLIT_FILES["dev"]).unlink()
    with pytest.raises(DatasetError, match=r"Flickr_8k\.devImages\.txt: split file not found"):
        load_dataset(copy, require_images=False)


def test_missing_images_are_named(flickr8k_annotations):
    with pytest.raises(
        DatasetError, match=rf"{IMAGES_DIR}/\S+\.jpg: image not found \(8000 of 8000"
    ):
        load_dataset(flickr8k_annotations)


def test_missing_image_in_small_dataset(tmp_path):
    generate(tmp_path, 16, seed=0, progress=False)
    victim = load_dataset(tmp_path).splits["test"][0]
    (tmp_path / IMAGES_DIR / victim).unlink()
    with pytest.raises(DatasetError, match=rf"{victim}: image not found \(1 of 16"):
        load_dataset(tmp_path)
