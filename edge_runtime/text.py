"""Caption text: one normalization for training targets, references and model outputs."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^a-z0-9\s]+")
_SPACES = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace.

    "A dog's ball ." -> "a dogs ball". Apostrophes are dropped rather than split so that
    "dog's" stays one token, as in the COCO tokenizer's output after punctuation removal.
    """
    text = text.lower().replace("'", "")
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Words of a caption after `normalize_caption`."""
    normalized = normalize_caption(text)
    return normalized.split(" ") if normalized else []


# Words that cannot end an English caption: articles, possessive determiners, conjunctions,
# auxiliaries and prepositions that need an object. Particles that may end one ("a dog
# lies down", "a boy looks up", "a man falls off") are left out: on, up, out, off, down,
# away, over, by, around, back. "her" is left out too: it is also an object pronoun, and
# Flickr8k's own references end on it 127 times in 35,000 ("... walks behind her"); with
# these words, 0.08% of the train and test references end dangling.
DANGLING_WORDS = frozenset(
    "a an the this these those "
    "his their its my your our "
    "and or but nor than "
    "is are was were be been being has have had does do "
    "of with in at to for from into onto toward towards through across between among "
    "beside near under".split()
)


def ends_dangling(caption: str) -> bool:
    """Whether a normalized caption ends on a word no English caption ends on, the
    self-critical training failure of "a man stands in front of a"; an empty caption
    does not."""
    words = caption.split()
    return bool(words) and words[-1] in DANGLING_WORDS
