"""Greedy decoding in plain numpy over any model with `init(features)` and `step(tokens, state)`.

The same code decodes a Keras run during evaluation and a bundle on the device, so the
quality we measure is the quality we ship. State is a tuple of arrays whose first axis
is the batch, so that a beam search can reorder hypotheses by indexing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .vocab import NEVER_EMITTED_IDS

State = tuple[np.ndarray, ...]


class StepModel(Protocol):
    """What decoding needs from a model (im2txt's feed_image / inference_step split)."""

    def init(self, features: np.ndarray) -> State:
        """features [B, F] -> the decoder's initial state, each array [B, ...]."""
        ...

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """tokens [B] int32, state -> (log_probs [B, V], next state)."""
        ...


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # word ids, without start and end tokens
    score: float  # sum of the chosen words' log-probabilities, end token included


def _masked(log_probs: np.ndarray, banned: Sequence[int]) -> np.ndarray:
    """log_probs [B, V] with the banned ids at -inf, so no search can ever pick them."""
    if not banned:
        return log_probs
    out = np.array(log_probs, dtype=np.float64)  # a copy: the model's buffer stays untouched
    out[:, list(banned)] = -np.inf
    return out


def greedy_decode(
    model: StepModel,
    features: np.ndarray,
    start_id: int,
    end_id: int,
    max_length: int,
    banned: Sequence[int] = NEVER_EMITTED_IDS,
) -> list[Decoded]:
    """Pick the most probable word at every step, for a batch of images at once.

    `max_length` counts words, not the end token; a caption that never ends is cut there.
    `banned` ids (by default <pad>, <start> and <unk>) are never chosen: a caption that
    says "<unk>" tells the user nothing, and the next most probable word usually does.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [B, F], got shape {features.shape}")
    batch = features.shape[0]
    state = model.init(features)
    tokens = np.full((batch,), start_id, dtype=np.int32)
    words: list[list[int]] = [[] for _ in range(batch)]
    scores = np.zeros(batch, dtype=np.float64)
    done = np.zeros(batch, dtype=bool)
    for _ in range(max_length + 1):
        log_probs, state = model.step(tokens, state)
        log_probs = _masked(log_probs, banned)
        tokens = np.argmax(log_probs, axis=-1).astype(np.int32)
        chosen = log_probs[np.arange(batch), tokens]
        for b in np.flatnonzero(~done):
            scores[b] += float(chosen[b])
            if tokens[b] == end_id:
                done[b] = True
            elif len(words[b]) < max_length:
                words[b].append(int(tokens[b]))
            else:
                done[b] = True
        if done.all():
            break
    return [Decoded(tokens=w, score=float(s)) for w, s in zip(words, scores, strict=True)]


def beam_search(
    model: StepModel,
    features: np.ndarray,
    start_id: int,
    end_id: int,
    max_length: int,
    beam_width: int = 3,
    length_penalty: float = 0.0,
    banned: Sequence[int] = NEVER_EMITTED_IDS,
) -> list[Decoded]:
    """Beam search for one image; returns up to `beam_width` captions, best first.

    All live hypotheses go through the step model in one call (batch <= beam_width).
    Finished captions are ranked by score / (words + 1) ** length_penalty (0: plain sum of
    log-probabilities). Unlike im2txt's original search, a finished caption is never pruned
    by later, longer hypotheses, and if no beam ever ends, the best unfinished ones are
    returned rather than nothing. `banned` ids are never chosen, as in greedy_decode.
    """
    if features.ndim != 2 or features.shape[0] != 1:
        raise ValueError(
            f"beam search takes one image's features [1, F], got shape {features.shape}"
        )
    if beam_width < 1:
        raise ValueError("beam_width must be at least 1")

    def ranked(words: list[int], score: float) -> float:
        return score / (len(words) + 1) ** length_penalty

    state = model.init(features)
    live_words: list[list[int]] = [[]]
    live_scores = np.zeros(1, dtype=np.float64)
    tokens = np.array([start_id], dtype=np.int32)
    finished: list[Decoded] = []
    for _ in range(max_length + 1):
        log_probs, state = model.step(tokens, state)  # [live, V]
        log_probs = _masked(log_probs, banned)
        totals = live_scores[:, None] + log_probs  # [live, V]
        order = np.argsort(-totals, axis=None, kind="stable")  # best first, over (beam, word)
        vocab_size = totals.shape[1]
        keep_beam, keep_word, keep_score = [], [], []
        for flat in order[: 2 * beam_width]:
            beam, word = divmod(int(flat), vocab_size)
            score = float(totals[beam, word])
            if word == end_id:
                finished.append(Decoded(tokens=list(live_words[beam]), score=score))
            elif len(live_words[beam]) < max_length and len(keep_beam) < beam_width:
                keep_beam.append(beam)
                keep_word.append(word)
                keep_score.append(score)
        if not keep_beam:
            break
        # Stop once no live hypothesis can still beat the k-th finished one: log-probabilities
        # only fall, so without a length penalty a live score is an upper bound.
        finished.sort(key=lambda d: ranked(d.tokens, d.score), reverse=True)
        if (
            length_penalty == 0.0
            and len(finished) >= beam_width
            and max(keep_score) <= finished[beam_width - 1].score
        ):
            break
        index = np.array(keep_beam)
        state = tuple(s[index] for s in state)  # reorder the state to follow its beams
        live_words = [live_words[b] + [w] for b, w in zip(keep_beam, keep_word, strict=True)]
        live_scores = np.array(keep_score)
        tokens = np.array(keep_word, dtype=np.int32)
    if not finished:
        finished = [
            Decoded(tokens=w, score=float(s)) for w, s in zip(live_words, live_scores, strict=True)
        ]
    finished.sort(key=lambda d: ranked(d.tokens, d.score), reverse=True)
    return finished[:beam_width]
