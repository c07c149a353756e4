"""Karpathy split files and COCO caption files read through the one `load_dataset`.

Fixtures are tiny JSON files written here; no TensorFlow is imported.
"""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from edgecap.edge_runtime.errors import DatasetError
from edgecap.edge_runtime.evaluation.datasets import CaptionDataset, load_dataset
from edgecap.edge_runtime.evaluation.json_datasets import COCO_SPLIT_NOTE
from edgecap.train import cli_data


def _image(filename: str, split: str, *captions: str, filepath: str | None = None) -> dict:
    entry = {"filename": filename, "split": split, "sentences": [{"raw": c} for c in captions]}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _karpathy(tmp_path: Path, images: list[dict], name: str = "flickr8k") -> Path:
    return _write(tmp_path / f"dataset_{name}.json", {"dataset": name, "images": images})


def _small_images() -> list[dict]:
    return [
        _image("a.jpg", "train", " a dog runs ", "a dog"),
        _image("b.jpg", "val", "a cat"),
        _image("c.jpg", "test", "a bird"),
        _image("d.jpg", "restval", "a fish"),
        _image("e.jpg", "train", "a cow"),
    ]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 30, 30)).save(path)


# --- Karpathy split files -----------------------------------------------------------------


def test_karpathy_splits_val_is_dev_and_restval_joins_train(tmp_path):
    ds = load_dataset(_karpathy(tmp_path, _small_images()), require_images=False)
    assert ds.splits == {"train": ["a.jpg", "d.jpg", "e.jpg"], "dev": ["b.jpg"], "test": ["c.jpg"]}
    assert ds.captions["a.jpg"] == ["a dog runs", "a dog"]  # raw, stripped
    assert ds.root == tmp_path / "dataset_flickr8k.json"
    assert ds.image_path("a.jpg") == tmp_path / "Flicker8k_Dataset" / "a.jpg"
    assert ds.notes == ("1 restval images joined train",)
    assert ds.split_items("dev") == [("b.jpg", ["a cat"])]


def test_restval_to_dev_or_dropped(tmp_path):
    path = _karpathy(tmp_path, _small_images())
    to_dev = load_dataset(path, require_images=False, restval="dev")
    assert to_dev.splits["train"] == ["a.jpg", "e.jpg"]
    assert to_dev.splits["dev"] == ["b.jpg", "d.jpg"]
    dropped = load_dataset(path, require_images=False, restval="drop")
    assert dropped.splits["train"] == ["a.jpg", "e.jpg"]
    assert "d.jpg" not in dropped.captions and dropped.unsplit_ids == 1
    with pytest.raises(ValueError, match="restval='val'; choose one of train, dev, drop"):
        load_dataset(path, require_images=False, restval="val")


def test_official_image_folders_and_filepath(tmp_path):
    f30k = load_dataset(_karpathy(tmp_path, _small_images(), "flickr30k"), require_images=False)
    assert f30k.image_path("a.jpg") == tmp_path / "flickr30k-images" / "a.jpg"
    other = load_dataset(_karpathy(tmp_path, _small_images(), "mine"), require_images=False)
    assert other.image_path("a.jpg") == tmp_path / "a.jpg"
    coco = [
        _image("COCO_train2014_1.jpg", "train", "x", filepath="train2014"),
        _image("COCO_val2014_2.jpg", "val", "y", filepath="val2014"),
        _image("COCO_val2014_3.jpg", "test", "z", filepath="val2014"),
        _image("COCO_val2014_4.jpg", "restval", "w", filepath="val2014"),
    ]
    ds = load_dataset(_karpathy(tmp_path, coco, "coco"), require_images=False)
    assert ds.splits["train"] == ["train2014/COCO_train2014_1.jpg", "val2014/COCO_val2014_4.jpg"]
    assert ds.image_path(ds.splits["dev"][0]) == tmp_path / "val2014" / "COCO_val2014_2.jpg"


def test_karpathy_require_images(tmp_path):
    path = _karpathy(tmp_path, _small_images())
    for name in "abcde":
        _png(tmp_path / "Flicker8k_Dataset" / f"{name}.jpg")
    ds = load_dataset(path)
    assert ds.image_path("c.jpg").is_file()
    (tmp_path / "Flicker8k_Dataset" / "c.jpg").unlink()
    missing = tmp_path / "Flicker8k_Dataset" / "c.jpg"
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert str(caught.value) == (
        f"{missing}: image not found (1 of 5 split images are missing). "
        f"Put the flickr8k images in {tmp_path / 'Flicker8k_Dataset'}."
    )
    assert load_dataset(path, require_images=False).splits == ds.splits


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, **kwargs)
    return str(caught.value)


def test_karpathy_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text('{"dataset": "flickr8k",\n "images": [}\n', encoding="utf-8")
    message = _error(path)
    assert message.startswith(f"{path}: not valid JSON (line 2, column 13: ")
    assert message.endswith("); re-download or repair the file")


def test_karpathy_missing_file_and_keys(tmp_path):
    assert (
        _error(tmp_path / "nope.json") == f"{tmp_path / 'nope.json'}: Karpathy split file not found"
    )
    path = _write(tmp_path / "d.json", {"dataset": "flickr8k"})
    assert _error(path).startswith(f"{path}: missing top-level key 'images'; expected {{")
    path = _write(tmp_path / "d.json", {"images": []})
    assert _error(path) == f"{path}: missing field 'dataset'"
    path = _write(tmp_path / "d.json", [1, 2])
    assert _error(path).startswith(f"{path}: the top level is a list, not an object")
    images = _small_images()
    del images[2]["split"]
    path = _karpathy(tmp_path, images)
    with pytest.raises(
        DatasetError, match=re.escape(f"{path}: images[2] (c.jpg): missing field 'split'")
    ):
        load_dataset(path, require_images=False)
    images = _small_images()
    del images[1]["filename"]
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[1]: missing field 'filename'"
    images = _small_images()
    images[3]["sentences"] = [{"tokens": ["a"]}]
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[3] (d.jpg).sentences[0]: missing field 'raw'"
    images = _small_images()
    images[4]["sentences"] = "a cow"
    path = _karpathy(tmp_path, images)
    assert _error(path) == (
        f'{path}: images[4] (e.jpg).sentences: expected a list of objects, got "a cow"'
    )


def test_karpathy_entries_of_the_wrong_shape(tmp_path):
    path = _karpathy(tmp_path, [*_small_images(), ["f.jpg"]])
    assert _error(path) == f'{path}: images[5]: expected an object, got ["f.jpg"]'
    images = _small_images()
    images[2]["filename"] = "  "
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[2].filename: must not be empty"
    images = _small_images()
    images[0]["filepath"] = 2014
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[0] (a.jpg).filepath: expected a string, got 2014"


def test_karpathy_unknown_split(tmp_path):
    images = _small_images()
    images[1]["split"] = "validation"
    path = _karpathy(tmp_path, images)
    assert _error(path, require_images=False) == (
        f'{path}: images[1] (b.jpg).split: expected one of "train", "val", "test", "restval", '
        'got "validation"'
    )


def test_karpathy_duplicates(tmp_path):
    same = _karpathy(tmp_path, [*_small_images(), _image("b.jpg", "val", "a cat")])
    assert _error(same) == (
        f"{same}: images[5] (b.jpg): image b.jpg is listed twice (first as images[1]); "
        "each image may appear once"
    )
    other = _karpathy(tmp_path, [*_small_images(), _image("b.jpg", "val", "a tiger")])
    assert _error(other) == (
        f"{other}: images[5] (b.jpg): image b.jpg is listed with different captions "
        "(first as images[1]); each image may appear once"
    )
    split = _karpathy(tmp_path, [*_small_images(), _image("b.jpg", "test", "a cat")])
    with pytest.raises(DatasetError, match=r"images\[5\] \(b\.jpg\): .* in both the val and test"):
        load_dataset(split)


def test_karpathy_image_without_captions(tmp_path):
    images = _small_images()
    images[2]["sentences"] = []
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[2] (c.jpg): the image has no captions"
    images[2]["sentences"] = [{"raw": "  "}]  # blank captions do not count
    path = _karpathy(tmp_path, images)
    assert _error(path) == f"{path}: images[2] (c.jpg): the image has no captions"


def test_karpathy_empty_split(tmp_path):
    images = [i for i in _small_images() if i["split"] != "test"]
    path = _karpathy(tmp_path, images)
    assert _error(path) == (
        f"{path}: the test split is empty (no images with split 'test'); training, "
        "validation and the test metrics each need images"
    )
    images = [i for i in _small_images() if i["split"] != "val"]
    path = _karpathy(tmp_path, images)
    # restval could have filled dev; it did not, because it joins train by default
    assert _error(path).startswith(f"{path}: the dev split is empty (no images with split 'val')")
    assert load_dataset(path, require_images=False, restval="dev").splits["dev"] == ["d.jpg"]


def test_karpathy_mixed_filepath(tmp_path):
    images = _small_images()
    images[0]["filepath"] = "train"
    path = _karpathy(tmp_path, images)
    assert _error(path) == (
        f"{path}: images[1] (b.jpg): images[0] has a 'filepath' and images[1] has none; "
        "give every image a filepath, or none"
    )


# --- COCO caption files ---------------------------------------------------------------------


def _coco_file(names: list[str], captions: dict[str, list[str]], first_id: int = 1) -> dict:
    ids = {n: first_id + k for k, n in enumerate(names)}
    annotations = [
        {"image_id": ids[n], "id": 100 * ids[n] + k, "caption": c}
        for n in names
        for k, c in enumerate(captions.get(n, [f"a photo of {n}"]))
    ]
    return {
        "info": {},
        "images": [{"id": ids[n], "file_name": n} for n in names],
        "annotations": annotations,
    }


def _coco(tmp_path: Path, train: dict | None = None, val: dict | None = None) -> Path:
    root = tmp_path / "coco"
    train_names = ["COCO_train2014_3.jpg", "COCO_train2014_1.jpg"]
    val_names = [f"COCO_val2014_{k}.jpg" for k in (5, 2, 9, 7, 1)]
    _write(root / "annotations" / "captions_train2014.json", train or _coco_file(train_names, {}))
    _write(root / "annotations" / "captions_val2014.json", val or _coco_file(val_names, {}, 50))
    return root


def test_coco_train_and_val_halves(tmp_path):
    root = _coco(tmp_path)
    ds = load_dataset(root, require_images=False)
    assert ds.splits == {
        "train": ["train2014/COCO_train2014_3.jpg", "train2014/COCO_train2014_1.jpg"],
        "dev": ["val2014/COCO_val2014_1.jpg", "val2014/COCO_val2014_2.jpg"],
        "test": [
            "val2014/COCO_val2014_5.jpg",
            "val2014/COCO_val2014_7.jpg",
            "val2014/COCO_val2014_9.jpg",
        ],
    }
    assert ds.captions["val2014/COCO_val2014_9.jpg"] == ["a photo of COCO_val2014_9.jpg"]
    assert ds.image_path("val2014/COCO_val2014_9.jpg") == root / "val2014" / "COCO_val2014_9.jpg"
    assert ds.notes == (COCO_SPLIT_NOTE.format(val="val2014"),)
    assert "not public" in ds.notes[0]


def test_coco_require_images(tmp_path):
    root = _coco(tmp_path)
    ds = load_dataset(root, require_images=False)
    for image_id in [i for ids in ds.splits.values() for i in ids]:
        _png(root / image_id)
    assert load_dataset(root).splits == ds.splits
    (root / "val2014" / "COCO_val2014_7.jpg").unlink()
    assert _error(root) == (
        f"{root / 'val2014' / 'COCO_val2014_7.jpg'}: image not found (1 of 7 split images are "
        f"missing). Put the COCO images in {root / 'train2014'} and {root / 'val2014'}."
    )


def test_coco_errors(tmp_path):
    val_file = tmp_path / "coco" / "annotations" / "captions_val2014.json"
    train_file = tmp_path / "coco" / "annotations" / "captions_train2014.json"
    root = _coco(tmp_path)
    val_file.write_text('{"images": [], "annotations": [', encoding="utf-8")
    assert _error(root).startswith(f"{val_file}: not valid JSON (line 1, column 32: ")

    val_file.unlink()
    assert _error(root, require_images=False).startswith(
        f"{val_file}: COCO caption file not found (a COCO folder needs captions_train*.json"
    )

    names = ["x.jpg", "y.jpg", "z.jpg"]
    data = _coco_file(names, {})
    del data["annotations"]
    root = _coco(tmp_path, val=data)
    assert _error(root).startswith(f"{val_file}: missing top-level key 'annotations'")

    data = _coco_file(names, {})
    del data["images"][1]["file_name"]
    root = _coco(tmp_path, val=data)
    assert _error(root) == f"{val_file}: images[1]: missing field 'file_name'"

    data = _coco_file(names, {})
    del data["annotations"][2]["caption"]
    root = _coco(tmp_path, val=data)
    assert _error(root) == f"{val_file}: annotations[2]: missing field 'caption'"

    data = _coco_file(names, {})
    data["images"][2]["id"] = True
    root = _coco(tmp_path, val=data)
    assert _error(root) == (
        f"{val_file}: images[2] (z.jpg).id: expected an integer or a string, got true"
    )

    data = _coco_file(names, {})
    data["images"][2]["file_name"] = "x.jpg"
    root = _coco(tmp_path, train=data)
    assert _error(root) == (
        f"{train_file}: images[2] (x.jpg): file name x.jpg is listed twice (first as images[0]); "
        "each image may appear once"
    )

    data = _coco_file(names, {})
    data["images"][2]["id"] = data["images"][0]["id"]
    root = _coco(tmp_path, train=data)
    assert _error(root) == (
        f"{train_file}: images[2] (z.jpg): image id 1 is listed twice (first as images[0]); "
        "each image may appear once"
    )

    data = _coco_file(names, {})
    data["annotations"].append({"image_id": 77, "caption": "a ghost"})
    root = _coco(tmp_path, val=data)
    assert _error(root) == (
        f"{val_file}: annotations[3]: image_id 77 is not in the file's images; "
        "an annotation must describe a listed image"
    )

    data = _coco_file(names, {})
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    root = _coco(tmp_path, val=data)
    assert _error(root) == f"{val_file}: images[1] (y.jpg): the image has no captions"


def test_coco_empty_splits(tmp_path):
    val_file = tmp_path / "coco" / "annotations" / "captions_val2014.json"
    train_file = tmp_path / "coco" / "annotations" / "captions_train2014.json"
    root = _coco(tmp_path, val=_coco_file(["only.jpg"], {}))
    assert _error(root) == (
        f"{val_file}: the dev split is empty (1 val images; dev and test are its two halves, "
        "so it needs at least 2)"
    )
    root = _coco(tmp_path, train={"images": [], "annotations": []})
    assert _error(root) == (
        f"{train_file}: the train split is empty (the file lists no images); training needs images"
    )


# --- the one entry point, and caption-data info --------------------------------------------


def test_flickr8k_layout_unchanged(tmp_path):
    # Not JSON, no annotations/captions_*.json: the Flickr8k reader and its messages.
    assert _error(tmp_path / "missing") == f"{tmp_path / 'missing'}: dataset folder not found"
    (tmp_path / "annotations").mkdir()
    assert _error(tmp_path).endswith(
        "caption file not found. A Flickr8k-layout dataset needs it; see README 'Data'."
    )
    assert (
        CaptionDataset(tmp_path, {}, {}).image_path("x.jpg")
        == tmp_path / "Flicker8k_Dataset" / "x.jpg"
    )


def test_caption_data_info_on_karpathy_and_coco(tmp_path, capsys):
    path = _karpathy(tmp_path, _small_images())
    assert cli_data.main(["info", str(path), "--annotations-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "train: 3 images, 4 captions",
        "dev: 1 images, 1 captions",
        "test: 1 images, 1 captions",
        "note: 1 restval images joined train",
    ]
    assert cli_data.main(["info", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"caption-data: error: {tmp_path / 'Flicker8k_Dataset' / 'a.jpg'}: image not found"
    )
    assert cli_data.main(["info", str(_coco(tmp_path)), "--annotations-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "train: 2 images, 2 captions",
        "dev: 2 images, 2 captions",
        "test: 3 images, 3 captions",
    ]
    assert lines[3].startswith("note: COCO's test captions are not public")


def test_real_flickr8k_as_karpathy_json(flickr8k_annotations, tmp_path):
    folder = load_dataset(flickr8k_annotations, require_images=False)
    karpathy_split = {"train": "train", "dev": "val", "test": "test"}
    images = [
        _image(image_id, karpathy_split[split], *folder.captions[image_id])
        for split, ids in folder.splits.items()
        for image_id in ids
    ]
    path = _karpathy(tmp_path, images)
    ds = load_dataset(path, require_images=False)
    assert {s: len(i) for s, i in ds.splits.items()} == {"train": 6000, "dev": 1000, "test": 1000}
    assert ds.splits == folder.splits  # the same order, too
    assert ds.captions == folder.captions
    image_id = ds.splits["test"][0]
    assert ds.image_path(image_id).relative_to(tmp_path) == folder.image_path(image_id).relative_to(
        flickr8k_annotations
    )
