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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgecap.edge_runtime.errors import DatasetError
from edgecap.edge_runtime.schema import from_json, gc_paused, json_field

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
T = TypeVar("T")


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


def _not_blank(value: str) -> None:
    if not value.strip():  # an image id, and the name of a file to open
        raise ValueError("must not be empty")


# The files' entries, read by from_json; keys not read here (tokens, cocoid...) are ignored.
# A refusal names the file, entry and field: "images[3] (d.jpg).sentences[0]: missing ...".
@dataclass
class _Sentence:
    raw: str = json_field(check=str.strip)  # stored stripped; a blank caption is skipped


@dataclass
class _KarpathyImage:
    filename: str = json_field(check=_not_blank)
    split: Literal["train", "val", "test", "restval"]  # KARPATHY_SPLITS' keys
    sentences: list[_Sentence]
    filepath: str | None = None  # its folder, relative to the JSON file's; null: no folder

    __json_label__ = "filename"


@dataclass
class _KarpathyFile:
    dataset: str
    images: list[_KarpathyImage]


@dataclass
class _CocoImage:
    id: int | str
    file_name: str

    __json_label__ = "file_name"


@dataclass
class _CocoCaption:
    image_id: int | str
    caption: str = json_field(check=str.strip)


@dataclass
class _CocoFile:
    images: list[_CocoImage]
    annotations: list[_CocoCaption]


def _read_file(path: Path, what: str, cls: type[T], keys: tuple[str, ...], shape: str) -> T:
    """The file as a checked `cls`. The top level is checked here, to say what the whole file
    should look like; the decoded JSON is dropped on return, before the entries are used."""
    with gc_paused():  # millions of objects that all live on: see gc_paused
        data = _read_json(path, what)
        if not isinstance(data, dict):
            raise DatasetError(
                f"{path}: the top level is a {type(data).__name__}, not an object; expected {shape}"
            )
        for key in keys:
            if key not in data:
                raise DatasetError(f"{path}: missing top-level key {key!r}; expected {shape}")
            if not isinstance(data[key], list):
                raise DatasetError(f"{path}: top-level {key!r} must be a list; expected {shape}")
        return from_json(cls, data, str(path), error=DatasetError)


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
    karpathy = _read_file(path, "Karpathy split file", _KarpathyFile, ("images",), shape)
    name = karpathy.dataset
    folder = path.parent

    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    captions: dict[str, list[str]] = {}
    where_seen: dict[str, tuple[int, str]] = {}  # image id -> (index, Karpathy split)
    with_filepath: int | None = None  # index of the first image with / without a filepath
    without_filepath: int | None = None
    dropped = restval_count = empty = 0
    for index, image in enumerate(karpathy.images):
        filename, split = image.filename, image.split
        where = f"images[{index}] ({filename})"
        if image.filepath is not None:
            sub = image.filepath.strip("/")
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
        texts = [s.raw for s in image.sentences if s.raw]
        empty += len(image.sentences) - len(texts)
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
    coco = _read_file(path, "COCO caption file", _CocoFile, ("images", "annotations"), shape)

    seen: dict[str, dict[Any, int]] = {"image id": {}, "file name": {}}  # -> index in images
    for index, image in enumerate(coco.images):
        for what, key in (("image id", image.id), ("file name", image.file_name)):
            if key in seen[what]:
                raise DatasetError(
                    f"{path}: images[{index}] ({image.file_name}): {what} {key} is listed twice "
                    f"(first as images[{seen[what][key]}]); each image may appear once"
                )
            seen[what][key] = index

    captions: dict[int | str, list[str]] = {image.id: [] for image in coco.images}
    empty = 0
    for index, annotation in enumerate(coco.annotations):
        if annotation.image_id not in captions:
            raise DatasetError(
                f"{path}: annotations[{index}]: image_id {annotation.image_id} is not in the "
                "file's images; an annotation must describe a listed image"
            )
        if annotation.caption:
            captions[annotation.image_id].append(annotation.caption)
        else:
            empty += 1
    _warn_empty(path, empty, "'caption' is blank")
    for index, image in enumerate(coco.images):
        if not captions[image.id]:
            raise DatasetError(
                f"{path}: images[{index}] ({image.file_name}): the image has no captions"
            )
    return {f"{image_folder}/{image.file_name}": captions[image.id] for image in coco.images}


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
