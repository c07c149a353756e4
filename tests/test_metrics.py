import math

import pytest

from edgecap.edge_runtime.metrics import corpus_bleu


def test_perfect_match_scores_one():
    refs = {
        "a": ["a small red circle above a blue square"],
        "b": ["there is a large green diamond"],
    }
    hyps = {k: v[0] for k, v in refs.items()}
    assert corpus_bleu(hyps, refs) == pytest.approx([1.0] * 4)


def test_hand_computed_bleu_with_clipping_and_brevity():
    # hyp "the the cat" vs ref "the cat sat on": unigram 2/3 (clipped "the"), bigram 1/2;
    # hyp length 3 < closest ref length 4 -> brevity exp(1 - 4/3).
    scores = corpus_bleu({"x": "the the cat"}, {"x": ["the cat sat on"]}, max_n=2)
    bp = math.exp(1 - 4 / 3)
    assert scores[0] == pytest.approx(bp * 2 / 3, rel=1e-6)
    assert scores[1] == pytest.approx(bp * math.sqrt(2 / 3 * 1 / 2), rel=1e-6)
