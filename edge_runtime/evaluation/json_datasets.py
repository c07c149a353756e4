"""Readers for caption datasets published as JSON: Karpathy's split files and COCO's own captions.

Both give the same `CaptionDataset` as the Flickr8k reader, so training, the feature cache
and evaluation never need to know which layout a dataset came in. `datasets.load_dataset`
picks the reader; call that, not these.

Karpathy split file (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json):

    {"dataset": "flickr30k", "images": [{"filename": "1000092795.jpg", "split": "train",
      "sentences": [{"raw": "Two young guys ..."}, ...]}, ...]}

    The optional "filepath" (COCO: "train2014" or "val2014") names the image's folder,
    relative to the JSON file's folder; without it the images are in the dataset's
    official image folder beside the JSON file (see OFFICIAL_IMAGE_DIRS).

COCO's own captions (a folder ROOT):

    ROOT/annotations/captions_train2014.json   {"images": [{"id", "file_name"}],
    ROOT/annotations/captions_val2014.json      "annotations": [{"image_id", "caption"}]}
    ROOT/train2014/*.jpg, ROOT/val2014/*.jpg    (the folder is named by the file)

    COCO's test captions are not public, so the val file's images, sorted by file name,
    are split in two: the first half is dev, the second half test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgecap.edge_runtime.errors import DatasetError

from .caption_dataset import CaptionDataset

log = logging.getLogger(__name__)

# Karpathy split -> our split; "restval" goes where the `restval` argument says.
KARPATHY_SPLITS = {"train": "train", "val": "dev", "test": "test", "restval": "restval"}
RESTVAL_CHOICES = ("train", "dev", "drop")
# Where the images of a Karpathy file without "filepath" live, beside the JSON file, as the
# official downloads unpack them; any other dataset name: in the JSON file's folder itself.
OFFICIAL_IMAGE_DIRS = {"flickr8k": "Flicker8k_Dataset", "flickr30k": "flickr30k-images"}
COCO_ANNOTATIONS_DIR = "annotations"
COCO_SPLIT_NOTE = (
    "COCO's test captions are not public: dev and test are the first and second half of "
    "the {val} images, sorted by file name"
)
SPLITS = ("train", "dev", "test")


def is_coco_folder(root: Path) -> bool:
    """True for a folder holding COCO's annotations/captions_*.json."""
    return root.is_dir() and any((root / COCO_ANNOTATIONS_DIR).glob("captions_*.json"))


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Line and column, because these files are tens of megabytes on one or few lines.
        raise DatasetError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-download or repair the file"
        ) from None


def _field(path: Path, entry: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """entry[key], or a DatasetError that names the file, the entry and the key."""
    if key not in entry:
        raise DatasetError(f"{path}: {where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DatasetError(
            f"{path}: {where}: {key!r} must be a {names}, not {type(value).__name__}"
        )
    return value


def _top_level(path: Path, data: Any, keys: tuple[str, ...], shape: str) -> None:
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: the top level is a {type(data).__name__}, not an object; expected {shape}"
        )
    for key in keys:
        if key not in data:
            raise DatasetError(f"{path}: missing top-level key {key!r}; expected {shape}")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: top-level {key!r} must be a list; expected {shape}")


def _check_splits(path: Path, splits: dict[str, list[str]], names: dict[str, str]) -> None:
    for split in SPLITS:
        if not splits[split]:
            # Training, validation and the test metrics each need images: say so here,
            # not with numpy's "need at least one array" deep in feature extraction.
            raise DatasetError(
                f"{path}: the {split} split is empty (no images with {names[split]}); "
                "training, validation and the test metrics each need images"
            )


def _check_images(dataset: CaptionDataset, advice: str) -> None:
    ids = [i for split in SPLITS for i in dataset.splits[split]]
    missing = [i for i in ids if not dataset.image_path(i).is_file()]
    if missing:
        first = dataset.image_path(missing[0])
        raise DatasetError(
            f"{first}: image not found ({len(missing)} of {len(ids)} split images are "
            f"missing). {advice}"
        )


def _warn_empty(path: Path, empty: int, what: str) -> None:
    if empty:
        log.warning("%s: skipped %d empty captions (%s)", path, empty, what)


def load_karpathy_json(
    path: str | Path, require_images: bool = True, restval: str = "train"
) -> CaptionDataset:
    """Read a Karpathy split file (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json).

    These files are how most captioning papers split Flickr30k and COCO, so reading them
    gives results comparable with those papers. "val" becomes our "dev"; COCO's "restval"
    images (val2014 images outside Karpathy's val and test) join train by default, as in
    the papers; `restval="dev"` puts them in dev and `restval="drop"` leaves them out
    (counted in `unsplit_ids`). Image ids are "filepath/filename" ("train2014/COCO_...jpg")
    when the file gives a filepath, else the file name.
    """
    if restval not in RESTVAL_CHOICES:
        raise ValueError(f"restval={restval!r}; choose one of {', '.join(RESTVAL_CHOICES)}")
    path = Path(path)
    shape = '{"dataset": name, "images": [{"filename", "split", "sentences": [{"raw"}]}]}'
    data = _read_json(path, "Karpathy split file")
    _top_level(path, data, ("images",), shape)
    name = _field(path, data, "dataset", "top level", str)
    folder = path.parent

    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    captions: dict[str, list[str]] = {}
    where_seen: dict[str, tuple[int, str]] = {}  # image id -> (index, Karpathy split)
    with_filepath: int | None = None  # index of the first image with / without a filepath
    without_filepath: int | None = None
    dropped = restval_count = empty = 0
    for index, entry in enumerate(data["images"]):
        where = f"images[{index}]"
        if not isinstance(entry, dict):
            raise DatasetError(
                f"{path}: {where}: an image must be an object, not {type(entry).__name__}"
            )
        filename = _field(path, entry, "filename", where, str)
        if not filename.strip():
            raise DatasetError(f"{path}: {where}: 'filename' is empty")
        where = f"images[{index}] ({filename})"
        if "filepath" in entry:
            sub = _field(path, entry, "filepath", where, str).strip("/")
            image_id = f"{sub}/{filename}" if sub else filename
            with_filepath = index if with_filepath is None else with_filepath
        else:
            image_id = filename
            without_filepath = index if without_filepath is None else without_filepath
        if with_filepath is not None and without_filepath is not None:
            # One image folder per dataset: an id is either relative to the JSON file's
            # folder (with filepath) or to the official image folder (without).
            raise DatasetError(
                f"{path}: {where}: images[{with_filepath}] has a 'filepath' and "
                f"images[{without_filepath}] has none; give every image a filepath, or none"
            )
        split = _field(path, entry, "split", where, str)
        if split not in KARPATHY_SPLITS:
            raise DatasetError(
                f"{path}: {where}: unknown split {split!r}; use one of {', '.join(KARPATHY_SPLITS)}"
            )
        sentences = _field(path, entry, "sentences", where, list)
        texts = []
        for k, sentence in enumerate(sentences):
            if not isinstance(sentence, dict):
                raise DatasetError(f"{path}: {where}: sentences[{k}] must be an object")
            raw = _field(path, sentence, "raw", f"{where} sentences[{k}]", str).strip()
            if raw:
                texts.append(raw)
            else:
                empty += 1
        if image_id in where_seen:
            first, first_split = where_seen[image_id]
            if texts != captions[image_id]:
                detail = "with different captions"
            elif split != first_split:
                detail = f"in both the {first_split} and {split} splits"
            else:
                detail = "twice"
            raise DatasetError(
                f"{path}: {where}: image {image_id} is listed {detail} (first as "
                f"images[{first}]); each image may appear once"
            )
        if not texts:
            raise DatasetError(f"{path}: {where}: the image has no captions")
        where_seen[image_id] = (index, split)
        captions[image_id] = texts
        ours = KARPATHY_SPLITS[split]
        if ours == "restval":
            restval_count += 1
            if restval == "drop":
                dropped += 1
                continue
            ours = restval
        splits[ours].append(image_id)
    _warn_empty(path, empty, "'raw' is blank")
    names = {"train": "split 'train'", "dev": "split 'val'", "test": "split 'test'"}
    if restval != "drop":
        names[restval] += " or 'restval'"
    _check_splits(path, splits, names)

    image_dir = folder if with_filepath is not None else folder / OFFICIAL_IMAGE_DIRS.get(name, "")
    notes: tuple[str, ...] = ()
    if restval_count:
        joined = "were left out" if restval == "drop" else f"joined {restval}"
        notes = (f"{restval_count} restval images {joined}",)
    kept = {i for ids in splits.values() for i in ids}
    dataset = CaptionDataset(
        root=path,
        splits=splits,
        captions={i: c for i, c in captions.items() if i in kept},
        unsplit_ids=dropped,
        image_dir=image_dir,
        notes=notes,
    )
    if require_images:
        if with_filepath is not None:
            advice = f"Put the images in their 'filepath' folders under {folder}."
        else:
            advice = f"Put the {name} images in {image_dir}."
        _check_images(dataset, advice)
    return dataset


def _coco_file(root: Path, kind: str) -> Path:
    annotations = root / COCO_ANNOTATIONS_DIR
    found = sorted(annotations.glob(f"captions_{kind}*.json"))
    if not found:
        raise DatasetError(
            f"{annotations / f'captions_{kind}2014.json'}: COCO caption file not found "
            f"(a COCO folder needs captions_train*.json and captions_val*.json in {annotations})"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{annotations}: {len(found)} COCO {kind} caption files "
            f"({', '.join(p.name for p in found)}); keep one"
        )
    return found[0]


def _read_coco_file(path: Path) -> dict[str, list[str]]:
    """Captions per image id ("train2014/<file_name>") of one COCO captions file."""
    image_folder = path.stem.removeprefix("captions_")  # captions_train2014 -> train2014
    shape = '{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}'
    data = _read_json(path, "COCO caption file")
    _top_level(path, data, ("images", "annotations"), shape)

    names: dict[int | str, str] = {}  # COCO image id -> file name
    first_index: dict[str, int] = {}  # file name -> index in images
    seen_ids: dict[int | str, int] = {}
    for index, entry in enumerate(data["images"]):
        where = f"images[{index}]"
        if not isinstance(entry, dict):
            raise DatasetError(
                f"{path}: {where}: an image must be an object, not {type(entry).__name__}"
            )
        coco_id = _field(path, entry, "id", where, (int, str))
        file_name = _field(path, entry, "file_name", where, str)
        where = f"images[{index}] ({file_name})"
        if coco_id in seen_ids:
            raise DatasetError(
                f"{path}: {where}: image id {coco_id} is listed twice (first as "
                f"images[{seen_ids[coco_id]}]); each image may appear once"
            )
        if file_name in first_index:
            raise DatasetError(
                f"{path}: {where}: file name {file_name} is listed twice (first as "
                f"images[{first_index[file_name]}]); each image may appear once"
            )
        seen_ids[coco_id] = index
        first_index[file_name] = index
        names[coco_id] = file_name

    captions: dict[str, list[str]] = {f"{image_folder}/{n}": [] for n in names.values()}
    empty = 0
    for index, entry in enumerate(data["annotations"]):
        where = f"annotations[{index}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: {where}: an annotation must be an object")
        coco_id = _field(path, entry, "image_id", where, (int, str))
        caption = _field(path, entry, "caption", where, str).strip()
        if coco_id not in names:
            raise DatasetError(
                f"{path}: {where}: image_id {coco_id} is not in the file's images; "
                "an annotation must describe a listed image"
            )
        if caption:
            captions[f"{image_folder}/{names[coco_id]}"].append(caption)
        else:
            empty += 1
    _warn_empty(path, empty, "'caption' is blank")
    for image_id, texts in captions.items():
        if not texts:
            file_name = image_id.partition("/")[2]
            raise DatasetError(
                f"{path}: images[{first_index[file_name]}] ({file_name}): the image has no captions"
            )
    return captions


def load_coco_folder(root: str | Path, require_images: bool = True) -> CaptionDataset:
    """Read COCO's own caption files: ROOT/annotations/captions_{train,val}*.json.

    The train file's images are the train split. COCO's test captions are not public, so
    the val file's images, sorted by file name, give dev (the first half) and test (the
    second half; one more image when the count is odd): a fixed, reproducible split that
    needs no extra file. For the papers' split, use Karpathy's dataset_coco.json instead.
    Image ids are "train2014/<file_name>" (the folder named by the caption file), the same
    ids dataset_coco.json gives, and the images are read from ROOT/train2014/ etc.
    """
    root = Path(root)
    train_file, val_file = _coco_file(root, "train"), _coco_file(root, "val")
    train = _read_coco_file(train_file)
    val = _read_coco_file(val_file)
    both = sorted(set(train) & set(val))
    if both:  # only when both files name the same image folder
        raise DatasetError(
            f"{val_file}: image {both[0]} is also in {train_file.name}; each image may appear once"
        )
    val_ids = sorted(val, key=lambda i: i.partition("/")[2])
    half = len(val_ids) // 2
    splits = {"train": list(train), "dev": val_ids[:half], "test": val_ids[half:]}
    if not splits["train"]:
        raise DatasetError(
            f"{train_file}: the train split is empty (the file lists no images); "
            "training needs images"
        )
    if not splits["dev"]:
        raise DatasetError(
            f"{val_file}: the dev split is empty ({len(val_ids)} val images; dev and test are "
            "its two halves, so it needs at least 2)"
        )
    dataset = CaptionDataset(
        root=root,
        splits=splits,
        captions={**train, **val},
        image_dir=root,
        notes=(COCO_SPLIT_NOTE.format(val=val_file.stem.removeprefix("captions_")),),
    )
    if require_images:
        folders = sorted({i.partition("/")[0] for ids in splits.values() for i in ids})
        _check_images(
            dataset, f"Put the COCO images in {' and '.join(str(root / f) for f in folders)}."
        )
    return dataset
