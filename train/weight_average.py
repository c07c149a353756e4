"""An exponential moving average of trained weights (Polyak averaging), for SCST and
fine-tuning.

SCST's policy gradient is noisy: from one epoch to the next its greedy dev CIDEr-D moves by
about a point (docs/flickr8k.md), and the kept epoch is partly luck. The average of the
weights over the last few epochs captions better than any one of them: on Flickr8k dev,
the mean of ft2 + SCST's epochs 13 and 16 scored greedy .2191 / .5154 against .2141 / .5063
and .2120 / .5060 for the two epochs alone. The training keeps sampling from the live
weights (the policy being trained); the average is what is scored on dev, kept and saved.

    average[t] = d * average[t-1] + (1 - d) * live[t],  d = min(decay, (1 + t) / (10 + t))

The ramp on d (TensorFlow's ExponentialMovingAverage with num_updates) lets the average
leave the parent's weights within the first epoch instead of trailing them for many.
Only trainable variables are averaged: the rest (BatchNorm statistics in inference mode,
dropout's seed state) do not change in SCST and an integer seed cannot be averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence


class WeightAverage:
    """The moving average of `models`' trainable variables; `variables` holds it (what a
    TrainingCheckpoint saves and restores). `steps` is the optimizer step counter whose
    value is t in the ramp (a resumed run reads it back with its optimizer)."""

    def __init__(self, models: Sequence, decay: float, steps) -> None:
        import tensorflow as tf

        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema-decay {decay}: a moving average's decay is in (0, 1); "
                             "0 turns averaging off")  # fmt: skip
        self.decay, self.steps = decay, steps
        self.live = [v for model in models for v in model.trainable_variables]
        self.variables = [
            tf.Variable(v, trainable=False, name=f"average_{i}") for i, v in enumerate(self.live)
        ]

        @tf.function
        def update():
            t = tf.cast(self.steps, tf.float32)
            d = tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t))
            for average, live in zip(self.variables, self.live, strict=True):
                average.assign(d * average + (1.0 - d) * live)

        self.update = update

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The models hold the averaged weights inside the block, their own after it."""
        own = [v.numpy() for v in self.live]
        self.copy_to_models()
        try:
            yield
        finally:
            for variable, value in zip(self.live, own, strict=True):
                variable.assign(value)

    def copy_to_models(self) -> None:
        """The models take the averaged weights for good (the run's final save)."""
        for variable, average in zip(self.live, self.variables, strict=True):
            variable.assign(average)


def scores_with_average(average: WeightAverage | None, score: Callable[[str], dict]) -> dict:
    """The dev scores an epoch is kept by: `score("")` of the average's weights when there
    is an average (with the live weights' beside them, `score("live_")`), else of the live
    weights. `score(prefix)` scores the models as they are, its keys starting with prefix."""
    if average is None:
        return score("")
    with average.applied():
        averaged = score("")
    return {**averaged, **score("live_")}
