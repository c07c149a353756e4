"""Our Java-free caption metrics against pycocoevalcap 1.2 itself, on the real Flickr8k test split.

The hypothesis for each image is its caption #0 and the references captions #1-4, so the numbers
are a human-vs-human baseline; what matters is that both implementations agree on them.
"""

import importlib.util
import logging
import math
import shutil
import sys
from dataclasses import asdict

import pytest

from edgecap.edge_runtime.evaluation import meteor
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import (
    corpus_bleu,
    corpus_cider_d,
    corpus_rouge_l,
    score,
)
from edgecap.edge_runtime.text import normalize_caption

TOLERANCE = 1e-6
METRICS = ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d"]
HAVE_PYCOCO = importlib.util.find_spec("pycocoevalcap") is not None
HAVE_METEOR = HAVE_PYCOCO and shutil.which("java") is not None


def _require_pycoco() -> None:
    if not HAVE_PYCOCO:
        pytest.fail("pycocoevalcap is needed for the parity tests: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def test_split(flickr8k_annotations):
    ds = load_dataset(flickr8k_annotations, require_images=False)
    hyps, refs = {}, {}
    for image_id in ds.splits["test"]:
        captions = [normalize_caption(c) for c in ds.captions[image_id]]
        hyps[image_id], refs[image_id] = captions[0], captions[1:5]
    assert len(hyps) == 1000
    return hyps, refs


@pytest.fixture(scope="module")
def ours(test_split):
    return asdict(score(*test_split))  # unrounded: to_json() rounds


@pytest.fixture(scope="module")
def theirs(test_split):
    _require_pycoco()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = test_split
    res = {i: [h] for i, h in hyps.items()}
    bleu, _ = Bleu(4).compute_score(refs, res, verbose=0)
    rouge, _ = Rouge().compute_score(refs, res)
    cider, _ = Cider().compute_score(refs, res)
    return dict(zip(METRICS, [*bleu, rouge, cider], strict=True))


@pytest.mark.parametrize("metric", METRICS)
def test_matches_pycocoevalcap_on_flickr8k_test(ours, theirs, metric):
    assert abs(ours[metric] - theirs[metric]) <= TOLERANCE, (ours[metric], theirs[metric])


def test_scores_shape(ours, test_split):
    assert list(ours) == [
        "images", *METRICS, "bleu1_sentence_mean", "dangling_endings", "meteor", "scene_accuracy"
    ]  # fmt: skip
    assert ours["images"] == 1000 and ours["meteor"] is None and ours["scene_accuracy"] is None
    values = [ours[m] for m in [*METRICS, "bleu1_sentence_mean"]]
    assert all(type(v) is float and math.isfinite(v) for v in values)
    # What metrics.json holds: the same keys, absent metrics left out, 6 places.
    saved = score(*test_split).to_json()
    assert list(saved) == ["images", *METRICS, "bleu1_sentence_mean", "dangling_endings"]
    # Human captions (#0 against the other four) end on a dangling word almost never.
    assert ours["dangling_endings"] <= 0.002
    assert all(saved[m] == round(ours[m], 6) for m in METRICS)
    # Caption #0 vs the other four is a human baseline: well above zero, well below perfect.
    assert 0.1 < ours["bleu4"] < 0.5 and 0.3 < ours["rouge_l"] < 0.7 and 0.3 < ours["cider_d"] < 2


# Hand-checkable cases. Two images with no words in common, so every n-gram has df 1 and
# idf log(2) > 0 (with a single image every idf would be log(1) = 0).
CAPTIONS = {"a": "a dog runs on the grass", "b": "two men ride bikes today"}


def test_identical_hypothesis_and_references():
    refs = {k: [c, c] for k, c in CAPTIONS.items()}
    # 1 up to pycocoevalcap's smoothing: (matches + 1e-15) / (totals + 1e-9).
    assert corpus_bleu(CAPTIONS, refs) == pytest.approx([1.0] * 4, rel=1e-8)
    assert corpus_rouge_l(CAPTIONS, refs) == 1.0
    # Cosine 1 for each n, no length penalty, averaged over n and references, times 10.
    assert corpus_cider_d(CAPTIONS, refs) == pytest.approx(10.0, rel=1e-12)


def test_hypothesis_sharing_nothing_with_references():
    hyps = {"a": "zebra piano", "b": "violet clouds sing"}
    refs = {k: [c] for k, c in CAPTIONS.items()}
    # Smoothing leaves ~1e-11 at most. (Swapped smoothing constants once gave BLEU-4 = 0.016 here.)
    assert all(0 <= b < 1e-9 for b in corpus_bleu(hyps, refs))
    assert corpus_rouge_l(hyps, refs) == 0.0
    assert corpus_cider_d(hyps, refs) == 0.0


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat on mat") = 4: P = 4/6, R = 4/4; F with beta 1.2.
    p, r = 4 / 6, 1.0
    expected = (1 + 1.2**2) * p * r / (r + 1.2**2 * p)
    score = corpus_rouge_l({"x": "the cat sat on the mat"}, {"x": ["the cat on mat"]})
    assert score == pytest.approx(expected, rel=1e-12)
    # pycocoevalcap takes max precision and max recall over references separately: here from
    # different references (P 1 from the long one, R 1 from the short one), so F is 1.
    assert corpus_rouge_l({"x": "a b c"}, {"x": ["a b", "a b c d e f"]}) == 1.0


def test_cider_d_of_a_one_image_corpus_is_zero():
    assert corpus_cider_d({"a": CAPTIONS["a"]}, {"a": [CAPTIONS["a"]]}) == 0.0


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="no hypotheses"):
        score({}, {})
    with pytest.raises(ValueError, match="no reference captions for 'b'"):
        score(CAPTIONS, {"a": [CAPTIONS["a"]], "b": []})


@pytest.mark.skipif(not HAVE_METEOR, reason="METEOR needs java on PATH and pycocoevalcap")
def test_meteor_matches_pycocoevalcap(test_split, monkeypatch):
    from pycocoevalcap.meteor import meteor as pycoco_meteor

    hyps, refs = test_split
    # Each JVM spends seconds loading METEOR's tables whatever the number of captions
    # (docs/benchmarks.md, "Figures behind the runtime's choices"): a few captions suffice.
    ids = list(hyps)[:50]
    hyps = {i: hyps[i] for i in ids}
    refs = {i: refs[i] for i in ids}

    started = []

    class Recording(pycoco_meteor.Meteor):
        def __init__(self):
            super().__init__()
            started.append(self)

    with monkeypatch.context() as m:
        m.setattr(pycoco_meteor, "Meteor", Recording)
        score = meteor.meteor_score(hyps, refs)
    assert len(started) == 1
    assert started[0].meteor_p.returncode is not None, "the Java process was left running"

    scorer = pycoco_meteor.Meteor()
    try:
        expected, _ = scorer.compute_score(refs, {i: [h] for i, h in hyps.items()})
    finally:
        meteor._close(scorer)
    assert score is not None and 0.1 < score < 0.6
    assert abs(score - expected) <= TOLERANCE, (score, expected)


def test_meteor_without_java_is_skipped_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(meteor.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger=meteor.__name__):
        assert meteor.meteor_score(CAPTIONS, {k: [c] for k, c in CAPTIONS.items()}) is None
    records = [r for r in caplog.records if r.name == meteor.__name__]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "no `java`" in records[0].getMessage()


def test_meteor_without_pycocoevalcap_is_skipped_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(meteor.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setitem(sys.modules, "pycocoevalcap.meteor.meteor", None)  # import -> ImportError
    with caplog.at_level(logging.WARNING, logger=meteor.__name__):
        assert meteor.meteor_score(CAPTIONS, {k: [c] for k, c in CAPTIONS.items()}) is None
    records = [r for r in caplog.records if r.name == meteor.__name__]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "pycocoevalcap is not installed" in records[0].getMessage()


@pytest.mark.filterwarnings("ignore:\\nThe hypothesis contains 0 counts")
def test_mean_sentence_bleu1_equals_nltk(test_split):
    """The seed's measure (mean sentence BLEU-1) equals NLTK's sentence_bleu, image by image
    averaged, on human captions and on short and empty ones that the brevity penalty bites."""
    from nltk.translate.bleu_score import sentence_bleu

    from edgecap.edge_runtime.evaluation.metrics import mean_sentence_bleu1

    hyps, refs = test_split
    variants = {
        "human": hyps,
        "short": {i: " ".join(h.split()[:3]) for i, h in hyps.items()},
        "repeated": {i: " ".join([h.split()[0]] * 6) for i, h in hyps.items()},
        "with empty": {i: ("" if n % 7 == 0 else h) for n, (i, h) in enumerate(hyps.items())},
    }
    for name, hypotheses in variants.items():
        expected = sum(
            sentence_bleu([r.split() for r in refs[i]], h.split(), weights=(1, 0, 0, 0))
            if h
            else 0.0
            for i, h in hypotheses.items()
        ) / len(hypotheses)
        assert mean_sentence_bleu1(hypotheses, refs) == pytest.approx(expected, abs=1e-9), name
    assert 0.3 < mean_sentence_bleu1(hyps, refs) < 0.8
