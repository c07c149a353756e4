"""Word vocabulary, stored as JSON (never pickle) in every run and bundle."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json_atomic
from .errors import BundleError
from .text import tokenize

VOCAB_FORMAT = "edgecap-vocab"
VOCAB_VERSION = 1

# Fixed ids: padding must be 0 so that Keras masking (mask_zero) ignores it.
PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
# Ids decoding never chooses: <pad>, <start> and <unk> (ids 0, 1 and 3). <end> stays, it
# is how a caption stops.
NEVER_EMITTED_IDS = (0, 1, 3)


@dataclass(frozen=True)
class Vocabulary:
    """Maps words to ids and back. Ids 0..3 are the special tokens, in SPECIAL_TOKENS order."""

    tokens: tuple[str, ...]
    min_count: int = 1
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tokens")
        self._index.update({t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(
            tokens=SPECIAL_TOKENS + tuple(w for w in words if w not in SPECIAL_TOKENS),
            min_count=min_count,
        )

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    def encode(self, caption: str) -> list[int]:
        """Word ids of a caption, without start/end tokens."""
        return [self._index.get(w, self.unk_id) for w in tokenize(caption)]

    def decode(self, ids: Sequence[int]) -> str:
        """Words of `ids`, stopping at the end token and skipping start/pad."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return " ".join(words)

    def to_json(self) -> dict:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "min_count": self.min_count,
            "special_tokens": {"pad": PAD, "start": START, "end": END, "unk": UNK},
            "tokens": list(self.tokens),
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def from_json(cls, obj: object, source: str = "vocabulary") -> Vocabulary:
        if not isinstance(obj, dict) or obj.get("format") != VOCAB_FORMAT:
            raise BundleError(
                f"{source}: not an edge-caption vocabulary (expected format {VOCAB_FORMAT!r})"
            )
        if obj.get("version") != VOCAB_VERSION:
            raise BundleError(
                f"{source}: vocabulary version {obj.get('version')!r} is not supported "
                f"(this runtime reads version {VOCAB_VERSION}); re-export the bundle"
            )
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise BundleError(f"{source}: 'tokens' must be a list of strings")
        min_count = obj.get("min_count", 1)
        if not isinstance(min_count, int):
            raise BundleError(f"{source}: 'min_count' must be an integer")
        try:
            return cls(tokens=tuple(tokens), min_count=min_count)
        except ValueError as exc:
            raise BundleError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"{path}: vocabulary file not found") from None
        except (ValueError, RecursionError) as exc:
            # ValueError: bad UTF-8, bad JSON or an over-long integer; RecursionError: a
            # hostile "[[[[...". Both are a bad file, not a crash.
            raise BundleError(f"{path}: vocabulary is not valid JSON ({exc})") from None
        return cls.from_json(obj, source=str(path))
