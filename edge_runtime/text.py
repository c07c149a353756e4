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
