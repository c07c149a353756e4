"""`load_dataset`, the one entry point for every dataset layout, and the reader of the
Flickr8k layout (the real one, and our synthetic scenes):

ROOT/Flicker8k_Dataset/*.jpg        (sic: the official folder name is misspelled)
ROOT/Flickr8k.token.txt             <image>#<n>\t<caption>
ROOT/Flickr_8k.{train,dev,test}Images.txt

It also reads Karpathy split files and COCO's own caption files (json_datasets.py), so
everything downstream sees one `CaptionDataset` (caption_dataset.py) whatever the layout.
The dataclass sits in its own module so that both readers import it and neither imports
the other's module: this one picks the reader, json_datasets.py never looks back.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path

from edgecap.edge_runtime.errors import DatasetError

from .caption_dataset import IMAGES_DIR, CaptionDataset
from .json_datasets import RESTVAL_CHOICES, is_coco_folder, load_coco_folder, load_karpathy_json

log = logging.getLogger(__name__)

TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
CAPTIONS_PER_IMAGE = 5
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DatasetError(
            f"{path}: {what} not found. A Flickr8k-layout dataset needs it; see README 'Data'."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8"
        ) from None


def read_captions(token_file: Path) -> tuple[dict[str, list[str]], int]:
    """Captions per image id from a token file, and the number of malformed lines skipped."""
    captions: dict[str, list[str]] = defaultdict(list)
    malformed = 0
    for line in _read_text(token_file, "caption file").splitlines():
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        image_id, hash_sign, _ = key.rpartition("#")
        if not sep or not hash_sign or not caption.strip():
            malformed += 1
            continue
        captions[image_id].append(caption.strip())
    return dict(captions), malformed


def read_split(path: Path) -> list[str]:
    ids = [line.strip() for line in _read_text(path, "split file").splitlines() if line.strip()]
    if not ids:
        # Training, validation and the test metrics each need images; fail here, by name,
        # rather than with numpy's "need at least one array" deep in feature extraction.
        raise DatasetError(f"{path}: the split file lists no images; one image id per line")
    if len(set(ids)) != len(ids):
        raise DatasetError(
            f"{path}: {len(ids) - len(set(ids))} duplicate image ids; each image may appear once"
        )
    return ids


def load_dataset(
    root: str | Path, require_images: bool = True, restval: str = "train"
) -> CaptionDataset:
    """Read a caption dataset: a Flickr8k-layout folder, a Karpathy-split JSON file or a
    COCO folder (one with annotations/captions_*.json); see json_datasets.py for the two
    JSON layouts.

    `require_images=False` reads annotations only (the images of the real Flickr8k cannot be
    shipped); otherwise every split image must exist. `restval` ("train", "dev" or "drop")
    says where a Karpathy file's restval images go; other layouts have none.
    """
    if restval not in RESTVAL_CHOICES:
        raise ValueError(f"restval={restval!r}; choose one of {', '.join(RESTVAL_CHOICES)}")
    root = Path(root)
    if root.suffix.lower() == ".json" and not root.is_dir():
        return load_karpathy_json(root, require_images=require_images, restval=restval)
    if is_coco_folder(root):
        return load_coco_folder(root, require_images=require_images)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    captions, malformed = read_captions(root / TOKEN_FILE)
    splits = {name: read_split(root / file) for name, file in SPLIT_FILES.items()}

    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for image_id in ids:
            if image_id in seen:
                raise DatasetError(
                    f"{root}: image {image_id} is in both the {seen[image_id]} and {name} splits"
                )
            seen[image_id] = name
        without = [i for i in ids if i not in captions]
        if without:
            raise DatasetError(
                f"{root / SPLIT_FILES[name]}: {len(without)} images have no caption in {TOKEN_FILE}, e.g. {without[0]}"
            )

    unsplit = sorted(set(captions) - set(seen))
    if unsplit:
        # Flickr8k itself has 93 of these; one line with a count, not 93 lines.
        odd_ids = [i for i in unsplit if Path(i).suffix.lower() not in IMAGE_SUFFIXES]
        log.warning(
            "%s: %d image ids have captions but are in no split (e.g. %s)%s; they are ignored",
            root / TOKEN_FILE,
            len(unsplit),
            ", ".join(unsplit[:3]),
            f", {len(odd_ids)} of them malformed ({', '.join(odd_ids[:3])})" if odd_ids else "",
        )
    if malformed:
        log.warning(
            "%s: skipped %d malformed lines (expected '<image>#<n>\\t<caption>')",
            root / TOKEN_FILE,
            malformed,
        )
    odd = [i for i in seen if len(captions[i]) != CAPTIONS_PER_IMAGE]
    if odd:
        log.warning(
            "%d split images do not have %d captions, e.g. %s", len(odd), CAPTIONS_PER_IMAGE, odd[0]
        )

    if require_images:
        missing = [i for i in seen if not (root / IMAGES_DIR / i).is_file()]
        if missing:
            raise DatasetError(
                f"{root / IMAGES_DIR / missing[0]}: image not found ({len(missing)} of {len(seen)} split images are "
                f"missing). Put the Flickr8k images in {root / IMAGES_DIR}."
            )
    return CaptionDataset(
        root=root,
        splits=splits,
        captions={i: captions[i] for i in seen},
        unsplit_ids=len(unsplit),
    )


def write_subset(
    source: str | Path, out: str | Path, sizes: dict[str, int], link: bool = True
) -> CaptionDataset:
    """A smaller Flickr8k-layout dataset: the first sizes[split] images of each split.

    The images are symlinked (link=True) or copied, never re-encoded, so that features of
    the subset equal features of the same images in the full dataset.
    """
    source_set = load_dataset(source)
    out = Path(out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    chosen = {split: source_set.splits[split][: sizes.get(split, 0)] for split in SPLIT_FILES}
    lines = []
    for split, ids in chosen.items():
        (out / SPLIT_FILES[split]).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        for image_id in ids:
            target = out / IMAGES_DIR / image_id
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)  # COCO ids: train2014/...
                if link:
                    target.symlink_to(source_set.image_path(image_id).resolve())
                else:
                    shutil.copyfile(source_set.image_path(image_id), target)
            lines += [f"{image_id}#{n}\t{c}\n" for n, c in enumerate(source_set.captions[image_id])]
    (out / TOKEN_FILE).write_text("".join(lines), encoding="utf-8")
    return load_dataset(out)
