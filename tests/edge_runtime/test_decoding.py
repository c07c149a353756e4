from functools import partial

import numpy as np
import pytest

from edgecap.edge_runtime import decoding
from edgecap.edge_runtime.vocab import NEVER_EMITTED_IDS

START, END = 1, 2
# The search itself, with nothing banned: these fakes use id 3 (<unk> in a real
# vocabulary) as an ordinary word. The tests at the end check the default bans.
greedy_decode = partial(decoding.greedy_decode, banned=())
beam_search = partial(decoding.beam_search, banned=())


class FakeModel:
    """Step probabilities written by hand: table[previous token] -> distribution over 5 words."""

    def __init__(self, table):
        self.table = {k: np.log(np.asarray(v, dtype=np.float64) + 1e-12) for k, v in table.items()}
        self.calls = 0

    def init(self, features):
        return (np.zeros((features.shape[0], 1)),)

    def step(self, tokens, state):
        self.calls += 1
        return np.stack([self.table[int(t)] for t in tokens]), state


def test_greedy_follows_the_most_probable_word_and_scores_it():
    model = FakeModel(
        {
            START: [0, 0, 0.1, 0.6, 0.3],  # -> 3
            3: [0, 0, 0.2, 0.1, 0.7],  # -> 4
            4: [0, 0, 0.9, 0.05, 0.05],  # -> end
        }
    )
    (decoded,) = greedy_decode(model, np.zeros((1, 4)), START, END, max_length=10)
    assert decoded.tokens == [3, 4]
    assert decoded.score == pytest.approx(np.log(0.6) + np.log(0.7) + np.log(0.9))


def test_greedy_cuts_captions_that_never_end():
    model = FakeModel({START: [0, 0, 0.1, 0.9, 0], 3: [0, 0, 0.1, 0.9, 0]})
    (decoded,) = greedy_decode(model, np.zeros((1, 4)), START, END, max_length=4)
    assert decoded.tokens == [3, 3, 3, 3]
    assert model.calls == 5  # four words, then one more step that still does not end


def test_greedy_batches_images_that_end_at_different_times():
    class PerImage(FakeModel):
        def init(self, features):
            return (features[:, :1].copy(),)

        def step(self, tokens, state):
            rows = []
            for t, s in zip(tokens, state[0][:, 0], strict=True):
                # Image 0 ends at once; image 1 says word 3 twice first.
                if s == 0 or int(t) == END:
                    rows.append([0, 0, 1.0, 0, 0])
                else:
                    rows.append([0, 0, 0, 1.0, 0])
            state = (state[0] - 0.5,)
            return np.log(np.asarray(rows) + 1e-12), state

    decoded = greedy_decode(PerImage({}), np.array([[0.0], [1.0]]), START, END, max_length=10)
    assert [d.tokens for d in decoded] == [[], [3, 3]]


class PrefixModel:
    """A fake step model whose next-word distribution depends on the whole prefix, which it
    keeps in its state as an id. So a search that mixes up the state of its beams when it
    reorders them gets the wrong probabilities, and the test sees it."""

    def __init__(self, table, vocab_size=6, default=None):
        self.table = table  # prefix tuple -> probabilities over the vocabulary
        self.vocab_size = vocab_size
        self.default = default
        self.prefixes: list[tuple] = [()]
        self.batch_sizes: list[int] = []

    def init(self, features):
        return (np.zeros((features.shape[0],), dtype=np.int64),)

    def step(self, tokens, state):
        self.batch_sizes.append(len(tokens))
        rows, next_ids = [], []
        for token, prefix_id in zip(tokens, state[0], strict=True):
            prefix = self.prefixes[prefix_id] + ((int(token),) if int(token) != START else ())
            probs = self.table.get(prefix, self.default)
            if probs is None:
                raise AssertionError(f"no distribution written for prefix {prefix}")
            rows.append(np.log(np.asarray(probs, dtype=np.float64) + 1e-12))
            self.prefixes.append(prefix)
            next_ids.append(len(self.prefixes) - 1)
        return np.stack(rows), (np.array(next_ids),)


def test_beam_finds_the_caption_that_greedy_misses():
    #            pad  start end   3     4     5
    model = PrefixModel(
        {
            (): [0, 0, 0.0, 0.6, 0.4, 0.0],
            (3,): [0, 0, 0.3, 0.0, 0.0, 0.7],  # 3 -> mostly 5
            (3, 5): [0, 0, 0.2, 0.4, 0.4, 0.0],  # a weak ending
            (3, 5, 3): [0, 0, 1.0, 0, 0, 0],
            (3, 5, 4): [0, 0, 1.0, 0, 0, 0],
            (4,): [0, 0, 0.95, 0.05, 0, 0],  # 4 then a confident end: 0.4 * 0.95 = 0.38
            (4, 3): [0, 0, 1.0, 0, 0, 0],
        }
    )
    greedy = greedy_decode(PrefixModel(model.table), np.zeros((1, 2)), START, END, max_length=5)[0]
    assert greedy.tokens == [3, 5, 3]  # 0.6 * 0.7 * 0.4 * 1.0 = 0.168
    best = beam_search(model, np.zeros((1, 2)), START, END, max_length=5, beam_width=2)
    assert best[0].tokens == [4]  # 0.38: it ranked second after one word and had to survive pruning
    assert best[0].score == pytest.approx(np.log(0.4) + np.log(0.95))
    assert best[1].tokens == [3]  # 0.6 * 0.3 = 0.18, finished early and kept
    assert max(model.batch_sizes) <= 2  # all live beams in one call, never more than k


def test_beam_keeps_an_early_finished_caption_that_later_beams_never_beat():
    model = PrefixModel(
        {(): [0, 0, 0.5, 0.25, 0.25, 0]},
        default=[0, 0, 0.01, 0.33, 0.33, 0.33],  # after any word: long and unlikely
    )
    best = beam_search(model, np.zeros((1, 2)), START, END, max_length=6, beam_width=3)
    assert best[0].tokens == [] and best[0].score == pytest.approx(np.log(0.5))


def test_beam_returns_the_best_unfinished_captions_when_no_beam_ever_ends():
    model = PrefixModel({}, default=[0, 0, 0.0, 0.5, 0.3, 0.2])
    best = beam_search(model, np.zeros((1, 2)), START, END, max_length=3, beam_width=2)
    assert [d.tokens for d in best] == [[3, 3, 3], [3, 3, 4]]
    assert best[0].score == pytest.approx(3 * np.log(0.5))


def test_length_penalty_prefers_longer_captions():
    model = PrefixModel(
        {
            (): [0, 0, 0.5, 0.5, 0, 0],
            (3,): [0, 0, 0.0, 0.0, 0.9, 0.1],
            (3, 4): [0, 0, 0.9, 0, 0, 0.1],
            (3, 5): [0, 0, 1.0, 0, 0, 0],
            (3, 4, 5): [0, 0, 1.0, 0, 0, 0],
        },
        default=[0, 0, 1.0, 0, 0, 0],  # zero-probability prefixes (e.g. after pad) just end
    )
    plain = beam_search(model, np.zeros((1, 2)), START, END, max_length=5, beam_width=2)
    assert plain[0].tokens == []  # log 0.5 beats log(0.5 * 0.9 * 0.9)
    normalized = beam_search(
        PrefixModel(model.table, default=model.default),
        np.zeros((1, 2)),
        START,
        END,
        max_length=5,
        beam_width=2,
        length_penalty=1.0,
    )
    assert normalized[0].tokens == [3, 4]  # log(0.405) / 3 > log(0.5) / 1


def test_length_penalty_search_stops_once_no_live_beam_ranks_above_the_finished_ones():
    # Every caption could go on for 30 words, but two finished captions beat anything still
    # live at step 2, so the search stops there instead of running to max_length.
    table = {
        (): [0, 0, 0.0, 0.6, 0.4, 0],
        (3,): [0, 0, 0.9, 0.05, 0.05, 0],
        (4,): [0, 0, 0.9, 0.05, 0.05, 0],
    }
    model = PrefixModel(table, default=[0, 0, 0.01, 0.5, 0.49, 0])
    best = beam_search(
        model, np.zeros((1, 2)), START, END, max_length=30, beam_width=2, length_penalty=1.0
    )
    assert [d.tokens for d in best] == [[3], [4]]
    assert len(model.batch_sizes) == 2  # two steps, not 31


def test_best_first_is_the_head_of_a_stable_argsort_ties_included():
    rng = np.random.default_rng(0)
    for _ in range(200):
        # Few distinct values, so that ties straddle the cut as often as not.
        totals = rng.integers(-4, 0, size=(3, 7)).astype(np.float64)
        totals[rng.random(totals.shape) < 0.2] = -np.inf
        count = int(rng.integers(1, 25))
        expected = np.argsort(-totals, axis=None, kind="stable")[:count]
        np.testing.assert_array_equal(decoding._best_first(totals, count), expected)


def test_beam_width_one_is_greedy():
    table = {(): [0, 0, 0.1, 0.6, 0.3, 0], (3,): [0, 0, 0.8, 0.1, 0.1, 0]}
    beam = beam_search(PrefixModel(table), np.zeros((1, 2)), START, END, max_length=4, beam_width=1)
    greedy = greedy_decode(PrefixModel(table), np.zeros((1, 2)), START, END, max_length=4)
    assert beam[0].tokens == greedy[0].tokens == [3]
    assert beam[0].score == pytest.approx(greedy[0].score)


# pad start end unk  4     5     6: a fake that loves the special tokens
LOVES_SPECIALS = {
    (): [0.3, 0.25, 0.0, 0.3, 0.1, 0.05, 0.0],
    (4,): [0.2, 0.2, 0.05, 0.4, 0.0, 0.15, 0.0],
    (4, 5): [0.3, 0.1, 0.04, 0.5, 0.0, 0.0, 0.06],
    (4, 5, 6): [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    (4, 2): [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    (5,): [0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0],
}


def test_greedy_never_chooses_pad_start_or_unk():
    assert NEVER_EMITTED_IDS == (0, 1, 3)
    model = PrefixModel(LOVES_SPECIALS, vocab_size=7, default=[0, 0, 1.0, 0, 0, 0, 0])
    (decoded,) = decoding.greedy_decode(model, np.zeros((1, 2)), START, END, max_length=6)
    # Unmasked, greedy would say <pad> or <unk> at every step; masked, it takes the best word.
    assert decoded.tokens == [4, 5, 6]
    assert decoded.score == pytest.approx(np.log(0.1) + np.log(0.15) + np.log(0.06) + np.log(1.0))
    (raw,) = greedy_decode(
        PrefixModel(LOVES_SPECIALS, 7, [0, 0, 1.0, 0, 0, 0, 0]), np.zeros((1, 2)), START, END, 6
    )
    assert raw.tokens[0] in (0, 3)  # the fake really does prefer them


def test_beam_never_chooses_pad_start_or_unk():
    model = PrefixModel(LOVES_SPECIALS, vocab_size=7, default=[0, 0, 1.0, 0, 0, 0, 0])
    best = decoding.beam_search(model, np.zeros((1, 2)), START, END, max_length=6, beam_width=3)
    assert best, "the search must still return captions"
    for hypothesis in best:
        assert not set(hypothesis.tokens) & set(NEVER_EMITTED_IDS), hypothesis
    # (5,) then end: 0.05 * 0.9 beats (4, 5, 6) end: 0.1 * 0.15 * 0.06
    assert best[0].tokens == [5]
    assert best[0].score == pytest.approx(np.log(0.05) + np.log(0.9))


def test_one_image_and_a_batch_choose_the_same_words_and_scores():
    """greedy_decode has a lean loop for one image (the device's case) and a batched one
    (evaluation); on random step tables, specials banned or not, they agree exactly."""

    class Random:
        def init(self, features):
            return (features[:, :1].astype(np.int64), np.zeros((len(features), 1), np.int64))

        def step(self, tokens, state):
            seeds, steps = state
            rows = []
            for seed, step, token in zip(seeds[:, 0], steps[:, 0], tokens, strict=True):
                rng = np.random.default_rng([int(seed), int(step), int(token)])
                logits = rng.normal(size=8) * 3
                logits[rng.integers(0, 8)] = logits.max()  # a tie for the first place
                rows.append(logits - np.log(np.exp(logits).sum()))
            return np.asarray(rows, dtype=np.float32), (seeds, steps + 1)

    features = np.arange(40, dtype=np.float64)[:, None]  # 40 images, each its own table
    for banned in ((), NEVER_EMITTED_IDS):
        batch = decoding.greedy_decode(Random(), features, START, END, 6, banned=banned)
        for row, together in zip(features, batch, strict=True):
            (alone,) = decoding.greedy_decode(Random(), row[None], START, END, 6, banned=banned)
            assert alone.tokens == together.tokens
            assert alone.score == together.score
        assert any(len(d.tokens) == 6 for d in batch) and any(len(d.tokens) < 6 for d in batch)
        assert not banned or all(not set(d.tokens) & set(banned) for d in batch)


@pytest.mark.parametrize("end", NEVER_EMITTED_IDS)
def test_the_callers_end_id_is_never_banned(end):
    """A vocabulary whose <end> is 0, 1 or 3 (another numbering than this project's):
    the default bans used to mask the end id too, so no caption ever ended."""
    start = 4 if end != 4 else 2
    probabilities = [0.0] * 5
    probabilities[end] = 0.6  # the end is the most probable word at once
    probabilities[2 if end != 2 else 4] = 0.4
    model = FakeModel(dict.fromkeys(range(5), probabilities))
    (greedy,) = decoding.greedy_decode(model, np.zeros((1, 4)), start, end, max_length=5)
    assert greedy.tokens == [] and greedy.score == pytest.approx(np.log(0.6))
    (batched, _) = decoding.greedy_decode(model, np.zeros((2, 4)), start, end, max_length=5)
    assert batched.tokens == []
    best = decoding.beam_search(model, np.zeros((1, 4)), start, end, max_length=5, beam_width=2)
    assert best[0].tokens == []


@pytest.mark.parametrize("penalty", [-300.0, 400.0, float("nan"), float("inf"), 10.5])
def test_length_penalty_out_of_range_is_refused(penalty):
    """-300 used to end in ZeroDivisionError and 400 in OverflowError, mid-search."""
    model = FakeModel({**dict.fromkeys(range(5), [0, 0, 1, 0, 0]), START: [0, 0, 0.5, 0.5, 0]})
    with pytest.raises(ValueError, match="length penalty must be between -10 and 10"):
        beam_search(model, np.zeros((1, 4)), START, END, 5, 3, penalty)
    with pytest.raises(ValueError, match="length penalty must be between -10 and 10"):
        decoding.DecodeOptions(beam_width=3, length_penalty=penalty)
    for fine in (-10, 0, 0.6, 10):
        beam_search(model, np.zeros((1, 4)), START, END, 5, 3, fine)


# twoway (Wang et al. 2016): one step model per direction, prefixes in generated order.
#            pad start end unk 4    5    6
FORWARD = {
    (): [0, 0, 0.0, 0, 0.6, 0.4, 0.0],
    (4,): [0, 0, 0.7, 0, 0.0, 0.0, 0.3],  # [4] then end: 0.42
    (4, 6): [0, 0, 1.0, 0, 0, 0, 0],
    (5,): [0, 0, 1.0, 0, 0, 0, 0],  # [5] then end: 0.4
}
BACKWARD_CONFIDENT = {
    (): [0, 0, 0.0, 0, 0.0, 0.1, 0.9],
    (6,): [0, 0, 0.1, 0, 0.0, 0.9, 0.0],
    (6, 5): [0, 0, 0.9, 0, 0.1, 0.0, 0.0],  # [6, 5] then end: 0.729, read "5 6"
}
BACKWARD_LONG = {
    (): [0, 0, 0.0, 0, 0.0, 0.3, 0.7],
    (5,): [0, 0, 1.0, 0, 0, 0, 0],
    (6,): [0, 0, 0.3, 0, 0.0, 0.7, 0.0],
    (6, 5): [0, 0, 0.38, 0, 0.62, 0.0, 0.0],
    (6, 5, 4): [0, 0, 1.0, 0, 0, 0, 0],  # [6, 5, 4] then end: 0.7 * 0.7 * 0.62 = 0.3038
}


def _two_way(backward_table):
    ends = [0, 0, 1.0, 0, 0, 0, 0]  # after a prefix of probability 0, which beams still see
    return decoding.TwoWayModel(PrefixModel(FORWARD, 7, ends), PrefixModel(backward_table, 7, ends))


def _decode(model, options, length_penalty=0.0):
    (decoded,) = decoding.decode_rows(
        model, np.zeros((1, 2)), START, END, 6, options, length_penalty=length_penalty
    )
    return decoded


def test_twoway_greedy_keeps_the_likelier_caption_and_reads_the_backward_one_reversed():
    model = _two_way(BACKWARD_CONFIDENT)
    decoded = _decode(model, decoding.DecodeOptions())
    assert decoded.tokens == [5, 6]  # generated right to left as 6, 5
    assert decoded.score == pytest.approx(3 * np.log(0.9))
    assert model.forward.batch_sizes and model.backward.batch_sizes  # both directions ran


def test_twoway_greedy_compares_summed_log_probabilities_with_no_length_penalty():
    """The bundle's length penalty is beam search's: greedy keeps the forward [4] (0.42)
    over the backward [4, 5, 6] (0.30), which a penalty of 1 would have preferred."""
    decoded = _decode(_two_way(BACKWARD_LONG), decoding.DecodeOptions(), length_penalty=1.0)
    assert decoded.tokens == [4]
    assert decoded.score == pytest.approx(np.log(0.42))


@pytest.mark.parametrize(
    ("penalty", "tokens", "probability"),
    [(0.0, [4], 0.42), (1.0, [4, 5, 6], 0.7 * 0.7 * 0.62)],
)
def test_twoway_beam_keeps_the_caption_that_ranks_higher_as_beam_search_ranks(
    penalty, tokens, probability
):
    """score / (words + 1) ** penalty: forward [4] -0.87 / 2 = -0.43 against backward
    [6, 5, 4] -1.19 / 4 = -0.30 at penalty 1; the plain sums choose the other way."""
    options = decoding.DecodeOptions(beam_width=2, length_penalty=penalty)
    decoded = _decode(_two_way(BACKWARD_LONG), options)
    assert decoded.tokens == tokens
    assert decoded.score == pytest.approx(np.log(probability))


def test_twoway_keeps_the_forward_caption_on_a_tie():
    forward = decoding.Decoded(tokens=[4, 5], score=-1.0)
    backward = decoding.Decoded(tokens=[6, 4], score=-1.0)
    assert decoding.keep_likelier(forward, backward) is forward
    better = decoding.Decoded(tokens=[6, 4], score=-0.5)
    assert decoding.keep_likelier(forward, better).tokens == [4, 6]
