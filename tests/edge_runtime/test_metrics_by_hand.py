import math

import pytest

from edgecap.edge_runtime.evaluation.metrics import corpus_bleu


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


@pytest.mark.parametrize(
    ("caption", "dangling"),
    [
        ("a man in a blue shirt is standing in front of a", True),
        ("a group of basketball players are playing in a", True),
        ("two dogs play with", True),
        ("a boy and", True),
        ("a woman holds their", True),
        ("a dog is", True),
        ("a man in a blue shirt is standing in front of a building", False),
        ("a dog lies down", False),  # particles may end a caption
        ("a boy looks up", False),
        ("a man falls off", False),
        ("a woman walks with a dog behind her", False),  # "her" is also an object pronoun
        ("", False),
    ],
)
def test_a_caption_ending_on_a_function_word_dangles(caption, dangling):
    from edgecap.edge_runtime.text import ends_dangling

    assert ends_dangling(caption) is dangling


def test_the_scorer_reports_the_share_of_dangling_endings():
    from edgecap.edge_runtime.evaluation.metrics import score

    refs = {k: ["a dog runs on the grass", "a brown dog runs"] for k in "abcd"}
    hyps = {"a": "a dog runs on the", "b": "a dog runs", "c": "a dog runs on the grass", "d": "a"}
    scores = score(hyps, refs)
    assert scores.dangling_endings == 0.5
    assert scores.to_json()["dangling_endings"] == 0.5
    complete = score({k: "a dog runs on the grass" for k in "abcd"}, refs)
    assert complete.dangling_endings == 0.0
