"""The one shape every dataset reader returns, whatever the layout on disk.

Both readers (datasets.py for the Flickr8k layout, json_datasets.py for Karpathy and COCO
files) build it; it imports neither, which is what keeps the two free of an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecap.edge_runtime.errors import DatasetError

IMAGES_DIR = "Flicker8k_Dataset"  # the Flickr8k layout's image folder (sic)


@dataclass(frozen=True)
class CaptionDataset:
    """Image ids per split and the raw captions of every split image.

    `root` is what `load_dataset` was given (a folder, or a Karpathy JSON file), so that
    `load_dataset(dataset.root)` reads the same dataset again. `image_dir` is where image
    ids are resolved; None means the Flickr8k layout's ROOT/Flicker8k_Dataset. `notes`
    are facts about how the splits were made that a user should see (`caption-data info`
    prints them), e.g. that COCO's dev and test are halves of its val images.
    """

    root: Path
    splits: dict[str, list[str]]
    captions: dict[str, list[str]]
    unsplit_ids: int = 0
    image_dir: Path | None = None
    notes: tuple[str, ...] = ()

    def image_path(self, image_id: str) -> Path:
        folder = self.image_dir if self.image_dir is not None else self.root / IMAGES_DIR
        return folder / image_id

    def split_items(self, split: str) -> list[tuple[str, list[str]]]:
        if split not in self.splits:
            raise DatasetError(f"unknown split {split!r}; choose one of {sorted(self.splits)}")
        return [(i, self.captions[i]) for i in self.splits[split]]
