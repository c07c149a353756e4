"""Greedy decoding in plain numpy over any model with `init(features)` and `step(tokens, state)`.

The same code decodes a Keras run during evaluation and a bundle on the device, so the
quality we measure is the quality we ship. State is a tuple of arrays whose first axis
is the batch, so that a beam search can reorder hypotheses by indexing.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .vocab import NEVER_EMITTED_IDS

if TYPE_CHECKING:  # the runtime's API users never build a parser: no argparse at import
    import argparse

State = tuple[np.ndarray, ...]

# Beam search ranks by score / (words + 1) ** length_penalty. Useful penalties lie near 0..2
# (Wu et al.'s 0.6-1.0, or this project's dev-chosen ones); past +-10 the ranking is only
# caption length, and at 400 or -300 the power over- or underflowed (OverflowError,
# ZeroDivisionError). 201 ** 10 (the longest caption a manifest allows) is about 1e23.
LENGTH_PENALTY_LIMIT = 10.0
MAX_BEAM_WIDTH = 100  # the search's cost grows with the width; wider is a typo, not a setting


def check_length_penalty(value: float, what: str = "length penalty") -> float:
    """`value` as a float if it is a finite number in [-LENGTH_PENALTY_LIMIT, +LIMIT];
    ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not (math.isfinite(value) and abs(value) <= LENGTH_PENALTY_LIMIT):
        raise ValueError(
            f"{what} must be between {-LENGTH_PENALTY_LIMIT:g} and {LENGTH_PENALTY_LIMIT:g}, "
            f"got {value!r}"
        )
    return float(value)


def _without_end(banned: Sequence[int], end_id: int) -> list[int]:
    """The banned ids less the caller's own end id: a vocabulary whose <end> is 0, 1 or 3
    (NEVER_EMITTED_IDS' defaults) must still be able to end a caption."""
    return [b for b in banned if b != end_id]


class StepModel(Protocol):
    """What decoding needs from a model (im2txt's feed_image / inference_step split)."""

    def init(self, features: np.ndarray) -> State:
        """features [B, F] -> the decoder's initial state, each array [B, ...]."""
        ...

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """tokens [B] int32, state -> (log_probs [B, V], next state)."""
        ...


@dataclass(frozen=True)
class TwoWayModel:
    """Two step models over the same features (decoder kind twoway, Wang et al. 2016):
    `forward` generates a caption left to right, `backward` generates one right to left.
    decode_rows decodes with each and keeps the likelier caption (keep_likelier)."""

    forward: StepModel
    backward: StepModel


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # word ids, without start and end tokens
    score: float  # sum of the chosen words' log-probabilities, end token included


def beam_rank(words: int, score: float, length_penalty: float) -> float:
    """What beam search ranks a finished caption of `words` words by: score / (words + 1)
    ** length_penalty (0: the plain sum of log-probabilities)."""
    return score / (words + 1) ** length_penalty


def keep_likelier(forward: Decoded, backward: Decoded, length_penalty: float = 0.0) -> Decoded:
    """A twoway model's caption: the forward one, or the backward one read left to right
    (its words reversed), whichever ranks higher by beam_rank; the forward one on a tie.

    Both directions model the probability of the same caption, so their scores compare.
    Greedy passes length_penalty 0 (the summed log-probabilities, as greedy search has no
    length penalty); beam search passes the penalty its own ranking used.
    """
    reversed_backward = Decoded(tokens=backward.tokens[::-1], score=backward.score)
    forward_rank = beam_rank(len(forward.tokens), forward.score, length_penalty)
    backward_rank = beam_rank(len(backward.tokens), backward.score, length_penalty)
    return reversed_backward if backward_rank > forward_rank else forward


def _greedy_one(
    model: StepModel,
    features: np.ndarray,
    start_id: int,
    end_id: int,
    max_length: int,
    banned: Sequence[int],
) -> Decoded:
    """greedy_decode for one image (the device's case), in Python scalars.

    The same choices as the batched loop, with as little work as possible between two
    steps: on a multi-core CPU the backend's worker threads spin only a few microseconds
    after a step before they sleep, and waking them costs more than the step itself
    (docs/benchmarks.md, "Figures behind the runtime's choices").
    """
    never = set(banned)
    banned_ids = np.array(sorted(never), dtype=np.intp)
    state = model.init(features)
    tokens = np.array([start_id], dtype=np.int32)  # [1]
    words: list[int] = []
    score = 0.0
    for _ in range(max_length + 1):
        log_probs, state = model.step(tokens, state)
        row = log_probs[0]  # [V]
        token = int(row.argmax())
        if token in never:  # rare: mask a copy (the backend's array stays untouched)
            row = row.copy()
            row[banned_ids] = -np.inf
            token = int(row.argmax())
        score += float(row[token])
        if token == end_id or len(words) == max_length:
            break
        words.append(token)
        tokens = np.array([token], dtype=np.int32)
    return Decoded(tokens=words, score=score)


def _masked(log_probs: np.ndarray, banned: Sequence[int]) -> np.ndarray:
    """log_probs [B, V] with the banned ids at -inf, so no search can ever pick them."""
    if not banned:
        return log_probs
    out = np.array(log_probs, dtype=np.float32)  # a copy: the model's buffer stays untouched
    out[:, list(banned)] = -np.inf
    return out


def _best_first(totals: np.ndarray, count: int) -> np.ndarray:
    """The `count` best flat indices of totals [live, V], best first, ties by lower index.

    Exactly the head of a stable argsort of -totals, without sorting all live x V entries.
    """
    flat = totals.ravel()
    if count >= flat.size:
        return np.argsort(-flat, kind="stable")
    threshold = -np.partition(-flat, count - 1)[count - 1]  # the count-th best value
    candidates = np.flatnonzero(flat >= threshold)  # every tie at the threshold included
    order = np.lexsort((candidates, -flat[candidates]))  # by value, then by index
    return candidates[order[:count]]


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
    `end_id` is never banned, even when it is among them.
    """
    if features.ndim not in (2, 3):
        raise ValueError(f"features must be [B, F] or [B, P, F], got shape {features.shape}")
    banned = _without_end(banned, end_id)
    batch = features.shape[0]
    if batch == 1:
        return [_greedy_one(model, features, start_id, end_id, max_length, banned)]
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
    returned rather than nothing. `banned` ids are never chosen, as in greedy_decode (the
    end id excepted). The length penalty must lie within +-LENGTH_PENALTY_LIMIT.

    The search stops once `beam_width` captions have finished and no live hypothesis ranks
    above the worst of them. Without a length penalty that is exact (log-probabilities only
    fall). With one, a live hypothesis is ranked as if it ended now, the rule of Hugging
    Face's default beam search: a longer caption could still climb, but waiting for that
    ran every search to max_length.
    """
    if features.ndim not in (2, 3) or features.shape[0] != 1:
        raise ValueError(
            f"beam search takes one image's features [1, F] or [1, P, F], got shape {features.shape}"
        )
    if beam_width < 1:
        raise ValueError("beam_width must be at least 1")
    length_penalty = check_length_penalty(length_penalty)
    banned = _without_end(banned, end_id)

    def ranked(words: int, score: float) -> float:
        return beam_rank(words, score, length_penalty)

    state = model.init(features)
    live_words: list[list[int]] = [[]]
    live_scores = np.zeros(1, dtype=np.float64)
    tokens = np.array([start_id], dtype=np.int32)
    finished: list[Decoded] = []
    # -ranked() of each finished caption, ascending: `finished` stays sorted best first,
    # a later caption after an equal earlier one (as a stable sort would leave them).
    finished_keys: list[float] = []
    for _ in range(max_length + 1):
        log_probs, state = model.step(tokens, state)  # [live, V]
        totals = live_scores[:, None] + _masked(log_probs, banned)  # [live, V]
        vocab_size = totals.shape[1]
        keep_beam, keep_word, keep_score = [], [], []
        for flat in _best_first(totals, 2 * beam_width).tolist():
            beam, word = divmod(flat, vocab_size)
            score = float(totals[beam, word])
            words = live_words[beam]
            if word == end_id:
                key = -ranked(len(words), score)
                at = bisect.bisect_right(finished_keys, key)
                finished.insert(at, Decoded(tokens=list(words), score=score))
                finished_keys.insert(at, key)
            elif len(words) < max_length and len(keep_beam) < beam_width:
                keep_beam.append(beam)
                keep_word.append(word)
                keep_score.append(score)
        if not keep_beam:
            break
        if len(finished) >= beam_width:
            best_live = max(
                ranked(len(live_words[b]) + 1, score)
                for b, score in zip(keep_beam, keep_score, strict=True)
            )
            if best_live <= -finished_keys[beam_width - 1]:
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
        finished.sort(key=lambda d: ranked(len(d.tokens), d.score), reverse=True)
    return finished[:beam_width]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: the same settings for a bundle on the device and a Keras run."""

    beam_width: int = 1
    """1 decodes greedily; k > 1 runs beam search with all k hypotheses in one step call."""

    length_penalty: float | None = None
    """Beam search ranks captions by score / (words + 1) ** length_penalty; None uses the
    model's own (a bundle's manifest `decoder.length_penalty`, which caption-export records
    as chosen on dev; 0 for a Keras run)."""

    max_length: int | None = None
    """Longest caption in words; None uses the model's own (the bundle's max_caption_length,
    or the run's)."""

    def __post_init__(self) -> None:
        if not 1 <= self.beam_width <= MAX_BEAM_WIDTH:
            raise ValueError(
                f"beam width must be between 1 and {MAX_BEAM_WIDTH}, got {self.beam_width}"
            )
        if self.length_penalty is not None:
            check_length_penalty(self.length_penalty)
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max length must be at least 1 word, got {self.max_length}")


def add_decode_options(parser: argparse.ArgumentParser, length_penalty_default: str) -> None:
    """--beam and --length-penalty, declared once for every command that decodes
    (edge_caption, caption-train evaluate); decode_options_from_args reads them back."""
    parser.add_argument(
        "--beam", type=int, default=1, help="beam width; 1 decodes greedily (default 1)"
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="beam search ranks captions by score / (words+1)**P (default: "
        f"{length_penalty_default})",
    )


def decode_options_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> DecodeOptions:
    """The DecodeOptions of add_decode_options' flags. An out-of-range flag is a usage
    error (exit 2, naming the flag) before anything loads: argparse takes "nan" and "inf"
    as floats, and an unbounded length penalty overflowed the beam search's ranking
    (ZeroDivisionError at -300, OverflowError at 400)."""
    if not 1 <= args.beam <= MAX_BEAM_WIDTH:
        parser.error(f"--beam must be between 1 and {MAX_BEAM_WIDTH}, got {args.beam}")
    if args.length_penalty is not None and not (
        -LENGTH_PENALTY_LIMIT <= args.length_penalty <= LENGTH_PENALTY_LIMIT  # NaN fails too
    ):
        parser.error(
            f"--length-penalty must be a number between {-LENGTH_PENALTY_LIMIT:g} and "
            f"{LENGTH_PENALTY_LIMIT:g} (0 ranks by the plain sum), got {args.length_penalty}"
        )
    return DecodeOptions(args.beam, args.length_penalty)


def decode_rows(
    model: StepModel | TwoWayModel,
    features: np.ndarray,
    start_id: int,
    end_id: int,
    max_length: int,
    options: DecodeOptions = DecodeOptions(),
    greedy_batch: int = 1,
    length_penalty: float = 0.0,
) -> list[Decoded]:
    """The best caption of each row of features [N, F], greedy or beam as options say.

    Greedy search decodes `greedy_batch` rows per step call; beam search one image at a
    time (its hypotheses are the batch). Every face — a bundle, a Keras run, training's
    dev score — decodes through here. A TwoWayModel decodes every row with each direction
    and keeps the likelier caption (keep_likelier).
    """
    length = options.max_length or max_length
    if options.length_penalty is not None:
        length_penalty = options.length_penalty
    if isinstance(model, TwoWayModel):
        forward, backward = (
            decode_rows(direction, features, start_id, end_id, length, options, greedy_batch,
                        length_penalty)
            for direction in (model.forward, model.backward)
        )  # fmt: skip
        # Greedy search ranks nothing by length, so neither does its choice of direction.
        penalty = length_penalty if options.beam_width > 1 else 0.0
        return [keep_likelier(f, b, penalty) for f, b in zip(forward, backward, strict=True)]
    if options.beam_width > 1:
        return [
            beam_search(
                model, row[None], start_id, end_id, length,
                options.beam_width, length_penalty,
            )[0]
            for row in features  # row [F] -> [1, F] (or [P, F] -> [1, P, F])
        ]  # fmt: skip
    decoded: list[Decoded] = []
    for start in range(0, len(features), greedy_batch):
        batch = features[start : start + greedy_batch]  # [b, F]
        decoded += greedy_decode(model, batch, start_id, end_id, length)
    return decoded
