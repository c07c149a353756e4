"""The shipped model is what its card says: the built-in bundle, captioning the whole
Flickr8k test split from the image files (greedy and beam 3, as `make release-model` scored
it), scores within 0.002 of its model card. A changed byte in any file fails at open (its
hash), an edited card or a stale model fails here. Needs the Flickr8k images (../shared)."""

import pytest

from edgecap.edge_runtime.builtin import DEFAULT_MODEL, MODELS_DIR, builtin_names
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import caption_split, score_split

TOLERANCE = 0.002
CHECKED = ("bleu1", "bleu4", "rouge_l", "cider_d", "bleu1_sentence_mean", "dangling_endings")


def test_the_default_model_ships_in_the_package():
    assert DEFAULT_MODEL in builtin_names(), f"no {DEFAULT_MODEL} in {MODELS_DIR}"


@pytest.fixture(scope="module")
def shipped():
    captioner = Captioner.open()  # the default built-in, every file's hash checked
    yield captioner
    captioner.close()


@pytest.mark.parametrize("decoding", ["greedy", "beam3"])
def test_the_built_in_model_scores_what_its_card_says(shipped, flickr8k_224, decoding):
    card = shipped.manifest.model_card["test_metrics"]
    assert card["images"] == 1000 and "224 px copy" in card["dataset"]
    dataset = load_dataset(flickr8k_224)
    ids = dataset.splits["test"]
    beam = 1 if decoding == "greedy" else 3
    predictions = caption_split(shipped, dataset, ids, DecodeOptions(beam_width=beam))
    measured = score_split(dataset, "test", predictions).to_json()
    claimed = card[decoding]
    off = {
        m: (measured[m], claimed[m]) for m in CHECKED if abs(measured[m] - claimed[m]) > TOLERANCE
    }
    assert not off, f"{decoding}: measured vs the card's {off}"
