"""Greedy decoding in plain numpy over any model with `init(features)` and `step(tokens, state)`.

The same code decodes a Keras run during evaluation and a bundle on the device, so the
quality we measure is the quality we ship. State is a tuple of arrays whose first axis
is the batch, so that a beam search can reorder hypotheses by indexing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

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


def greedy_decode(
    model: StepModel, features: np.ndarray, start_id: int, end_id: int, max_length: int
) -> list[Decoded]:
    """Pick the most probable word at every step, for a batch of images at once.

    `max_length` counts words, not the end token; a caption that never ends is cut there.
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
