import numpy as np
import pytest

from edgecap.edge_runtime.decoding import greedy_decode

START, END = 1, 2


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
