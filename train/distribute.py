"""`caption-train --distribute`: which tf.distribute strategy trains, and what each replica reads.

    none          one device, TensorFlow's default strategy (the default)
    mirrored      MirroredStrategy: every local GPU, or the devices --devices lists
    multi-worker  MultiWorkerMirroredStrategy: the cluster TF_CONFIG describes, on every
                  machine the same command, the same --out and --feature-cache on shared storage

`--batch-size` is the global batch. Each of the R replicas trains on every R-th row of
each global batch, cut to the global batch's longest caption, so one optimizer step sees
the rows a one-device run sees, Keras averages the replicas' losses into the one-device
loss, and `--learning-rate` means the same on any number of replicas (no scaling rule).

Only the chief (TF_CONFIG's "chief", else worker 0) writes: the run directory, the
checkpoints, the metrics. Every worker resumes from the chief's `checkpoints/last.npz`,
so a worker killed mid-run and restarted (with the others, as MultiWorkerMirroredStrategy
requires) goes on from the last whole epoch. Keras 3's BackupAndRestore would be the
library's way, but it has no chief: every worker writes the same backup files. The run's
own atomic checkpoint, written by one process, already does what it would.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence

DISTRIBUTE_CHOICES = ("none", "mirrored", "multi-worker")


def make_strategy(kind: str, devices: Sequence[str] = ()):
    """The tf.distribute strategy for `kind`. Create it before any other TensorFlow op:
    MultiWorkerMirroredStrategy must configure the collective ops at program start."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if not devices and not tf.config.list_logical_devices("GPU"):
            raise ValueError(
                "--distribute mirrored: TensorFlow sees no GPU here; list the devices to "
                "mirror over with --devices (e.g. GPU:0,GPU:1), or train with --distribute none"
            )
        return tf.distribute.MirroredStrategy(list(devices) or None)
    if kind == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--distribute multi-worker: TF_CONFIG is not set; every worker needs it, "
                'e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} (README "Training at scale")'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as exc:
            raise ValueError(f"TF_CONFIG is not JSON ({exc})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, not {kind!r}")


def is_chief(strategy) -> bool:
    """True for the one process that writes: TF_CONFIG's chief, else worker 0, else the
    only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def replica_rows(batches: Iterator[tuple], replicas: Sequence[int], of: int) -> Iterator[tuple]:
    """For each global (x, y, weights) batch, the rows of each of `replicas` in turn:
    replica r of `of` takes rows r, r + of, r + 2 of... (every array keeps its width)."""
    for x, y, weights in batches:
        for r in replicas:
            yield {k: v[r::of] for k, v in x.items()}, y[r::of], weights[r::of]


def distributed_input(strategy, batches, epoch: int, shuffle: bool = True):
    """TrainingBatches `batches` of `epoch` as the strategy's input: the plain dataset on one
    replica, else one pipeline per worker that yields its replicas' rows of every batch."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batches.dataset(epoch, shuffle)

    def pipeline(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return batches.dataset(epoch, shuffle, replicas=range(first, first + local), of=replicas)

    return strategy.distribute_datasets_from_function(pipeline)


def epoch_line(epoch: int, epochs: int, seconds: float, logs: dict) -> str:
    """'Epoch 12/20 - 41s - loss: 2.1034 - ...': epoch (from 0) of the run's `epochs`."""
    shown = " - ".join(f"{k}: {float(v):.4f}" for k, v in logs.items())
    return f"Epoch {epoch + 1}/{epochs} - {seconds:.0f}s - {shown}"


class ReplicatedTraining:
    """Epochs on several replicas: what model.fit(epochs=e + 1, initial_epoch=e) does on
    one, with the same loss, metrics, logs and callbacks.

    Keras 3.15's fit cannot train under MultiWorkerMirroredStrategy: it reduces the first
    batch's structure with Strategy.reduce, and the step's metrics along axis 0 of scalars,
    and both fail (keras-team/keras#20585, tensorflow/tensorflow#72388, open). This is
    TensorFlow's custom-loop pattern instead: strategy.run of one step per replica, the
    Keras optimizer summing the replicas' gradients.

    The loss is fit's on one device: sparse cross-entropy summed with the pad-masking
    weights and divided by the global batch's sum of weights (its words; Keras divides by
    the valid tokens of the embedding's mask, the same positions), so the replicas' shares
    add up to the one-device loss. As in fit under a strategy, the optimizer clips each
    replica's gradient (clipnorm) before the sum: the two differ only on steps where
    clipping bites.
    """

    def __init__(self, model, strategy):
        import tensorflow as tf

        self.model, self.strategy = model, strategy
        # Traced once for all epochs; batches differ in width, hence reduce_retracing.
        self.steps = {
            training: tf.function(lambda batch, t=training: self._step(batch, t),
                                  reduce_retracing=True)
            for training in (True, False)
        }  # fmt: skip

    def _step(self, batch, training: bool):
        sums = self.strategy.run(self._replica_step, args=(*batch, training))
        return self.strategy.reduce("SUM", sums, axis=None)

    def _replica_step(self, x, y, weights, training: bool):
        import keras
        import tensorflow as tf

        model = self.model
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        with tf.GradientTape() as tape:
            logits = model(x, training=training)
            per_token = cross_entropy(y, logits)  # [B, T] (lstm/merge) or [B] (blstm)
            loss_sum, weight = tf.reduce_sum(per_token * weights), tf.reduce_sum(weights)
            every_weight = tf.distribute.get_replica_context().all_reduce("SUM", weight)
            loss = loss_sum / every_weight
        if training:
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32) * weights)
        rows = tf.cast(tf.shape(y)[0], tf.float32)
        # Keras' accuracy averages each caption over the batch's width before summing, so
        # a batch counts in proportion to its words / width: do the same, to log the same.
        width = tf.cast(tf.reduce_prod(tf.shape(y)[1:]), tf.float32)
        return tf.stack([loss_sum, weight, rows, correct / width, weight / width])

    def _run(self, distributed_input, training: bool) -> dict:
        weighted_loss = rows = correct = weight = 0.0
        for batch in distributed_input:
            loss_sum, words, batch_rows, batch_correct, accuracy_weight = self.steps[training](
                batch
            ).numpy()
            # fit's "loss": the mean over batches of each batch's loss, weighted by its rows
            weighted_loss += loss_sum / words * batch_rows
            rows, correct, weight = (
                rows + batch_rows,
                correct + batch_correct,
                weight + accuracy_weight,
            )
        return {"loss": weighted_loss / rows, "accuracy": correct / weight}

    def epoch(self, train_input, dev_input, epoch: int, callbacks: Sequence, epochs: int,
              verbose: bool = True) -> dict:  # fmt: skip
        """Train one epoch on `train_input`, then measure `dev_input` (both distributed
        datasets); calls each callback's on_epoch_begin and on_epoch_end with fit's logs."""
        for callback in callbacks:
            callback.set_model(self.model)
            callback.on_epoch_begin(epoch)
        start = time.perf_counter()
        logs = self._run(train_input, training=True)
        logs.update({f"val_{k}": v for k, v in self._run(dev_input, training=False).items()})
        if verbose:
            print(epoch_line(epoch, epochs, time.perf_counter() - start, logs), flush=True)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        return logs
