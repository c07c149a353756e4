"""Streamed training batches: every caption once per epoch, the order a function of the epoch
alone, batches cut to their longest caption, features looked up by image index."""

import numpy as np
import pytest

from edgecap.train.inputs import (
    LENGTH_WINDOW_BATCHES,
    CaptionTable,
    TrainingBatches,
    batch_plan,
)


def _table(lengths: list[int], images: int = 7, width: int = 12) -> CaptionTable:
    rng = np.random.default_rng(0)
    inputs = np.zeros((len(lengths), width), np.int32)
    targets = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):  # n predicted tokens: n - 1 words, then <end>
        words = rng.integers(4, 50, n - 1)
        inputs[row, :n] = [1, *words]
        targets[row, :n] = [*words, 2]
    index = np.arange(len(lengths), dtype=np.int32) % images
    return CaptionTable(index, inputs, targets, np.array(lengths, np.int32))


def test_plan_covers_every_caption_once_and_depends_on_the_epoch_only():
    lengths = np.random.default_rng(1).integers(2, 12, 1000)
    plan = batch_plan(lengths, 16, seed=3, epoch=5)
    assert len(plan) == -(-1000 // 16)  # what resume counts epochs with
    assert sorted(np.concatenate(plan).tolist()) == list(range(1000))
    again = batch_plan(lengths, 16, seed=3, epoch=5)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))
    other = batch_plan(lengths, 16, seed=3, epoch=6)
    assert not all(np.array_equal(a, b) for a, b in zip(plan, other, strict=True))
    # Grouped by length: inside a window, a batch spans far fewer lengths than random would.
    spread = np.mean([np.ptp(lengths[b]) for b in plan])
    assert spread < 2.0, spread
    assert LENGTH_WINDOW_BATCHES * 16 < 1000  # the test has more than one window


def test_lstm_batches_are_cut_to_their_longest_caption_and_gather_features():
    table = _table([3, 5, 2, 9, 4, 4, 6])
    features = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)  # [N, F], row k = image k
    batches = TrainingBatches(table, features, "lstm", batch_size=3, seed=0)
    seen, per_batch = [], []
    for x, y, w in batches.batches(epoch=0):
        rows = [
            int(np.flatnonzero((table.inputs[:, : x["tokens"].shape[1]] == t).all(1))[0])
            for t in x["tokens"]
        ]
        width = max(table.lengths[rows])
        assert x["tokens"].shape[1] == y.shape[1] == width
        assert np.array_equal(x["features"], features[table.image_index[rows]])
        assert np.array_equal(w, (y != 0).astype(np.float32))
        seen += rows
        per_batch.append(sorted(rows))
    assert sorted(seen) == list(range(7)) and len(batches) == 3
    # In the epoch's own shuffled order, not the split's.
    assert per_batch == [sorted(b.tolist()) for b in batch_plan(table.lengths, 3, 0, 0)]


def test_blstm_pairs_are_built_per_batch_and_a_fraction_draws_a_share():
    table = _table([3, 2, 4])  # 9 (prefix -> next word) pairs
    features = np.eye(7, dtype=np.float32)
    full = TrainingBatches(table, features, "blstm", batch_size=4, seed=0)
    pairs = [
        (tuple(p), int(t))
        for x, y, _ in full.batches(0)
        for p, t in zip(x["prefix"], y, strict=True)
    ]
    assert len(pairs) == 9 and len(full) == 3
    expected = [
        (tuple(table.inputs[r, : s + 1]), int(table.targets[r, s]))
        for r in range(3)
        for s in range(table.lengths[r])
    ]  # every prefix <start> w1 .. ws and the word after it
    assert sorted((p[: int(np.count_nonzero(p))], t) for p, t in pairs) == sorted(expected)
    for x, _, _ in full.batches(0):  # cut to the batch's longest prefix, padded after it
        assert x["prefix"].shape[1] == np.count_nonzero(x["prefix"], axis=1).max()
    share = TrainingBatches(table, features, "blstm", batch_size=2, seed=0, fraction=0.5)
    drawn = [len(y) for _, y, _ in share.batches(0)]
    assert sum(drawn) == 4 or sum(drawn) == 5  # round(9 * 0.5)
    assert len(share) == len(drawn)


@pytest.mark.parametrize("kind", ["lstm", "blstm"])
def test_dataset_matches_the_generator(kind):
    table = _table([3, 5, 2, 9])
    features = np.ones((7, 5), np.float32)
    batches = TrainingBatches(table, features, kind, batch_size=2, seed=1)
    from_tf = list(batches.dataset(2).as_numpy_iterator())
    from_numpy = list(batches.batches(2))
    assert len(from_tf) == len(from_numpy) == len(batches)
    for (x1, y1, w1), (x2, y2, w2) in zip(from_tf, from_numpy, strict=True):
        assert all(np.array_equal(x1[k], x2[k]) for k in x2)
        assert np.array_equal(y1, y2) and np.array_equal(w1, w2)


def test_right_to_left_reads_each_caption_backwards_with_start_and_end_in_place():
    table = CaptionTable(
        np.array([0, 1], np.int32),
        np.array([[1, 7, 8, 9, 0], [1, 5, 6, 7, 8]], np.int32),  # the second fills the width
        np.array([[7, 8, 9, 2, 0], [5, 6, 7, 8, 2]], np.int32),
        np.array([4, 5], np.int32),
    )
    backward = table.right_to_left(pad_id=0)
    assert backward.inputs.tolist() == [[1, 9, 8, 7, 0], [1, 8, 7, 6, 5]]
    assert backward.targets.tolist() == [[9, 8, 7, 2, 0], [8, 7, 6, 5, 2]]
    assert np.array_equal(backward.lengths, table.lengths)
    assert np.array_equal(backward.image_index, table.image_index)


def test_twoway_batches_hold_both_directions_side_by_side():
    table = _table([3, 5, 2, 9, 4, 4, 6])
    features = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)  # [N, F]
    lstm = list(TrainingBatches(table, features, "lstm", batch_size=3, seed=0).batches(0))
    twoway = list(TrainingBatches(table, features, "twoway", batch_size=3, seed=0).batches(0))
    backward = table.right_to_left(pad_id=0)
    for (x, y, w), (x2, y2, w2) in zip(lstm, twoway, strict=True):
        width = x["tokens"].shape[1]
        assert x2["tokens"].shape[1] == y2.shape[1] == 2 * width
        assert np.array_equal(x2["tokens"][:, :width], x["tokens"])  # forward half as lstm's
        assert np.array_equal(y2[:, :width], y)
        rows = [int(np.flatnonzero((table.inputs[:, :width] == t).all(1))[0]) for t in x["tokens"]]
        assert np.array_equal(x2["tokens"][:, width:], backward.inputs[rows, :width])
        assert np.array_equal(y2[:, width:], backward.targets[rows, :width])
        assert np.array_equal(w2, (y2 != 0).astype(np.float32))
        assert w2.sum() == 2 * w.sum()  # every word predicted once per direction
