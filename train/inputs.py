"""Training batches gathered on the fly from a split's cached features.

Features stay one row per image ([N, F]); a batch looks its rows up by image index, so
memory does not grow with captions x feature size (30,000 Flickr8k captions would copy
the 6,000 images' features five times over, and the BLSTM's one-pair-per-word table about
sixty times). lstm/merge batches are grouped by caption length and cut to their longest
caption, so the LSTM does not run over 30 padded steps for an 11-word caption.

The order of epoch e depends only on (seed, e): a resumed run sees the batches it would
have seen had it never stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgecap.edge_runtime.evaluation.datasets import CaptionDataset
from edgecap.edge_runtime.vocab import Vocabulary

# Captions are sorted by length inside windows of this many batches: small enough that the
# batch order stays random, large enough that a batch's captions have near-equal lengths.
LENGTH_WINDOW_BATCHES = 50


@dataclass(frozen=True)
class CaptionTable:
    """Every (image, caption) pair of a split as token ids, for teacher forcing.

    inputs = [<start>, w1 .. wn], targets = [w1 .. wn, <end>], 0-padded to max_length + 1.
    """

    image_index: np.ndarray  # [C] int32: row of the split's features
    inputs: np.ndarray  # [C, W] int32
    targets: np.ndarray  # [C, W] int32
    lengths: np.ndarray  # [C] int32: predicted tokens, <end> included

    @classmethod
    def build(
        cls, dataset: CaptionDataset, split: str, vocab: Vocabulary, max_length: int
    ) -> CaptionTable:
        image_index, inputs, targets = [], [], []
        width = max_length + 1
        for index, (_, captions) in enumerate(dataset.split_items(split)):
            for caption in captions:
                ids = vocab.encode(caption)[:max_length]
                pad = [vocab.pad_id] * (width - len(ids) - 1)
                image_index.append(index)
                inputs.append([vocab.start_id, *ids, *pad])
                targets.append([*ids, vocab.end_id, *pad])
        targets_array = np.array(targets, np.int32).reshape(-1, width)  # [C, W]
        return cls(
            image_index=np.array(image_index, np.int32),
            inputs=np.array(inputs, np.int32).reshape(-1, width),  # [C, W]
            targets=targets_array,
            lengths=(targets_array != vocab.pad_id).sum(axis=1).astype(np.int32),
        )

    def right_to_left(self, pad_id: int) -> CaptionTable:
        """The same captions read right to left (twoway's backward direction):
        inputs = [<start>, wn .. w1], targets = [wn .. w1, <end>], padded as before."""
        width = self.inputs.shape[1]
        words = (self.lengths - 1)[:, None]  # [C, 1]: n, the words of each caption
        position = np.arange(width)[None, :]  # [1, W]
        inside = position <= words  # [C, W]: <start> or <end> and the n words
        # inputs[k] holds w_k (k = 1..n): position j >= 1 reads w_(n+1-j); <start> stays.
        from_inputs = np.where(position == 0, 0, words + 1 - position)  # [C, W]
        # targets[k] holds w_(k+1): position j < n reads w_(n-j); <end> stays at n.
        from_targets = np.where(position < words, words - 1 - position, position)  # [C, W]

        def gather(array: np.ndarray, source: np.ndarray) -> np.ndarray:
            picked = np.take_along_axis(array, np.clip(source, 0, width - 1), axis=1)
            return np.where(inside, picked, pad_id).astype(np.int32)  # [C, W]

        return CaptionTable(
            image_index=self.image_index,
            inputs=gather(self.inputs, from_inputs),
            targets=gather(self.targets, from_targets),
            lengths=self.lengths,
        )


def batch_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The rows of each batch of one epoch: shuffled, grouped by length, batches shuffled.

    The count is ceil(len / batch_size) in every epoch: each full window holds exactly
    LENGTH_WINDOW_BATCHES full batches, so resume can count epochs from optimizer steps.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * LENGTH_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def examples_per_epoch(table: CaptionTable, kind: str, fraction: float = 1.0) -> int:
    """Captions (lstm/merge) or (prefix, next word) pairs (blstm) one epoch trains on."""
    every = int(table.lengths.sum()) if kind == "blstm" else len(table.lengths)
    return max(1, round(every * fraction))


def steps_per_epoch(table: CaptionTable, kind: str, batch_size: int, fraction: float = 1.0) -> int:
    return -(-examples_per_epoch(table, kind, fraction) // batch_size)


class TrainingBatches:
    """(x, y, sample_weight) batches of one split for one decoder kind, as a tf.data.Dataset.

    lstm/merge: x = {features [B, F], tokens [B, T]}, y = targets [B, T], weights 0 on pad.
    twoway: as lstm, with tokens and targets [B, 2T]: the forward ones, then the same
    captions reversed (CaptionTable.right_to_left), each cut to the batch's longest caption.
    blstm: one (prefix -> next word) pair per predicted word, built per batch, pairs of
    like prefix length together: x = {features [B, F], prefix [B, L]} with L the batch's
    longest prefix, y = next word [B], weights 1.
    """

    def __init__(
        self,
        table: CaptionTable,
        features: np.ndarray,
        kind: str,
        batch_size: int,
        seed: int,
        pad_id: int = 0,
        fraction: float = 1.0,
    ):
        """`fraction` < 1: each epoch trains on that share of the examples, drawn afresh
        (seeded by the epoch), so an epoch of the BLSTM's many pairs stays affordable."""
        self.table, self.features, self.kind = table, features, kind
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.fraction = fraction
        if kind == "blstm":
            rows, steps = np.nonzero(table.targets != pad_id)  # one pair per predicted word
            self.pair_rows, self.pair_steps = rows.astype(np.int32), steps.astype(np.int32)
        self.backward = table.right_to_left(pad_id) if kind == "twoway" else None

    def __len__(self) -> int:
        return steps_per_epoch(self.table, self.kind, self.batch_size, self.fraction)

    def batches(
        self, epoch: int, shuffle: bool = True
    ) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
        """The batches of `epoch`, in order; shuffle=False keeps the split's order (dev)."""
        table = self.table
        if self.kind == "blstm":
            count = len(self.pair_rows)
            if shuffle:
                share = np.random.default_rng([self.seed, epoch]).permutation(count)
                share = share[: examples_per_epoch(table, self.kind, self.fraction)]
                # Pairs of like prefix length share a batch, so that a batch is cut to its
                # longest prefix: about 8 steps instead of prefix_length's 31 on Flickr8k.
                plan = [share[b] for b in batch_plan(self.pair_steps[share] + 1,
                                                     self.batch_size, self.seed, epoch)]  # fmt: skip
            else:
                every = np.arange(count)
                plan = [every[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
            for pick in plan:
                rows, steps = self.pair_rows[pick], self.pair_steps[pick]
                width = int(steps.max()) + 1  # the batch's longest prefix
                keep = np.arange(width)[None, :] <= steps[:, None]  # [B, L]: prefix to that word
                prefix = np.where(keep, table.inputs[rows, :width], self.pad_id).astype(np.int32)
                x = {"features": self.features[table.image_index[rows]], "prefix": prefix}
                yield x, table.targets[rows, steps], np.ones(len(rows), np.float32)
            return
        if shuffle:
            plan = batch_plan(table.lengths, self.batch_size, self.seed, epoch)
            if self.fraction < 1.0:
                plan = plan[: len(self)]  # batches are in random order: a random share
        else:
            every = np.arange(len(table.lengths))
            plan = [every[i : i + self.batch_size] for i in range(0, len(every), self.batch_size)]
        for rows in plan:
            width = int(table.lengths[rows].max())  # the batch's longest caption
            targets = table.targets[rows, :width]  # [B, T]
            tokens = table.inputs[rows, :width]  # [B, T]
            if self.backward is not None:  # twoway: both directions side by side
                tokens = np.concatenate([tokens, self.backward.inputs[rows, :width]], axis=1)
                targets = np.concatenate([targets, self.backward.targets[rows, :width]], axis=1)
            x = {"features": self.features[table.image_index[rows]], "tokens": tokens}
            yield x, targets, (targets != self.pad_id).astype(np.float32)

    def dataset(
        self, epoch: int, shuffle: bool = True, replicas: Sequence[int] = (0,), of: int = 1
    ):
        """A tf.data.Dataset over batches(epoch, shuffle), prefetching one batch. With
        `of` > 1 replicas, it yields the rows of each of `replicas` of every batch in turn
        (distribute.replica_rows): one worker's share of the global batches."""
        import tensorflow as tf

        from .distribute import replica_rows

        text = "prefix" if self.kind == "blstm" else "tokens"
        text_shape = [None, None]  # every batch is cut to its longest caption or prefix
        target_shape = [None] if self.kind == "blstm" else [None, None]
        signature = (
            {
                # [B, F], or [B, P, F] for a feature map
                "features": tf.TensorSpec([None, *self.features.shape[1:]], tf.float32),
                text: tf.TensorSpec(text_shape, tf.int32),
            },
            tf.TensorSpec(target_shape, tf.int32),
            tf.TensorSpec(target_shape, tf.float32),
        )

        def source():
            batches = self.batches(epoch, shuffle)
            return batches if of == 1 else replica_rows(batches, replicas, of)

        batches = tf.data.Dataset.from_generator(source, output_signature=signature)
        # A known length, so that Keras shows progress and does not warn at the epoch's end.
        count = len(self) * len(replicas)
        return batches.apply(tf.data.experimental.assert_cardinality(count)).prefetch(1)
