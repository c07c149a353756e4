"""The evaluation room: caption datasets, their scores and latency statistics.

Workstation and benchmark code reads datasets, scores captions and times calls with it;
a device never imports it (the edge_caption CLI captions, it does not score), so the
files beside this folder are what a device runs. No TensorFlow here either
(tests/edge_runtime/test_no_tensorflow.py).

The front door, for most callers:

    dataset = load_dataset(root)                       # any layout: datasets.py
    predictions = caption_split(captioner, dataset, ids, decode)
    scores = score_split(dataset, "test", predictions)  # references and scenes fetched

Modules: caption_dataset (the one dataset shape), datasets (load_dataset, Flickr8k layout),
json_datasets (Karpathy and COCO files), metrics (BLEU, ROUGE-L, CIDEr-D, score_split),
meteor (METEOR through Java), scenes (the synthetic scenes' grammar), timing (latency).
"""

from .caption_dataset import CaptionDataset
from .datasets import load_dataset, write_subset
from .metrics import Scores, caption_split, score, score_split

__all__ = [
    "CaptionDataset",
    "Scores",
    "caption_split",
    "load_dataset",
    "score",
    "score_split",
    "write_subset",
]
