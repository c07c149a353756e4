import json

import pytest

from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.text import normalize_caption, tokenize
from edgecap.edge_runtime.vocab import SPECIAL_TOKENS, Vocabulary


def test_normalization_lowercases_and_strips_punctuation():
    assert normalize_caption(
        "A child in a pink dress is climbing up a set of stairs in an entry way ."
    ) == ("a child in a pink dress is climbing up a set of stairs in an entry way")
    assert normalize_caption("  The dog's ball,  RED!  ") == "the dogs ball red"
    assert tokenize("Two-dogs  play.") == ["two", "dogs", "play"]
    assert tokenize(" . ") == []


def test_vocabulary_min_count_special_tokens_and_roundtrip(tmp_path):
    vocab = Vocabulary.build(["a red circle", "a red square", "a blue Circle ."], min_count=2)
    assert vocab.tokens[:4] == SPECIAL_TOKENS
    assert vocab.tokens[4:] == ("a", "circle", "red")  # most frequent first, ties alphabetical
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.encode("a blue circle") == [4, vocab.unk_id, 5]
    assert vocab.decode([1, 4, 6, 5, 2, 4]) == "a red circle"

    path = tmp_path / "vocab.json"
    vocab.save(path)
    saved = json.loads(path.read_text())
    assert saved["format"] == "edgecap-vocab" and saved["min_count"] == 2
    assert Vocabulary.load(path) == vocab


def test_vocabulary_refuses_bad_files(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text('{"format": "edgecap-vocab", "version": 9, "tokens": []}')
    with pytest.raises(BundleError, match="vocabulary version 9 is not supported"):
        Vocabulary.load(path)
    path.write_text('{"format": "edgecap-vocab", "version": 1, "tokens": ["a", "b"]}')
    with pytest.raises(BundleError, match="must start with"):
        Vocabulary.load(path)
    path.write_text("not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Vocabulary.load(path)
