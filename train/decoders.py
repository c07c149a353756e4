"""Caption decoders: the Keras model trained with teacher forcing, and the step model built
from its weights that export converts and evaluation decodes with.

LSTM inject (Show and Tell): features -> dense -> (h0, c0); then one word per step.

The step model is plain LSTM cell math with explicit state, not a Keras LSTM layer: the
TFLite converter never fuses a Keras 3 LSTM and turns it into a WHILE loop or Flex ops,
which ai_edge_litert and tflite_runtime cannot run (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DECODER_KINDS = ("lstm",)


@dataclass(frozen=True)
class DecoderConfig:
    kind: str = "lstm"  # "lstm": LSTM inject (Show and Tell)
    vocab_size: int = 0  # filled in from the vocabulary
    feature_dim: int = 0  # filled in from the encoder
    embed_dim: int = 128  # word embedding width
    units: int = 256  # LSTM state width (h and c)
    dropout: float = 0.2  # on features and LSTM outputs, training only
    max_length: int = 20  # longest caption in words, end token excluded

    def to_json(self) -> dict:
        return asdict(self)


def build_training_model(config: DecoderConfig):
    """features [B, F], tokens [B, T] (start + words, 0-padded) -> logits [B, T, V]."""
    import keras

    if config.kind not in DECODER_KINDS:
        raise ValueError(f"unknown decoder {config.kind!r}; choose one of {DECODER_KINDS}")
    features = keras.Input((config.feature_dim,), name="features")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Dropout(config.dropout, name="feature_dropout")(features)
    h0 = keras.layers.Dense(config.units, activation="tanh", name="init_h")(x)
    c0 = keras.layers.Dense(config.units, name="init_c")(x)
    embedded = keras.layers.Embedding(
        config.vocab_size, config.embed_dim, mask_zero=True, name="embedding"
    )(tokens)
    seq = keras.layers.LSTM(config.units, return_sequences=True, name="lstm")(
        embedded, initial_state=[h0, c0]
    )
    seq = keras.layers.Dropout(config.dropout, name="output_dropout")(seq)
    logits = keras.layers.Dense(config.vocab_size, name="logits")(seq)
    return keras.Model(
        {"features": features, "tokens": tokens}, logits, name=f"decoder_{config.kind}"
    )


class LstmStepModule:
    """tf.functions `init` and `step` over the trained weights, for export and evaluation.

    Gate order follows Keras' LSTM: input, forget, cell, output.
    """

    def __init__(self, model, config: DecoderConfig):
        import tensorflow as tf

        self.config = config
        weights = {w.path: np.asarray(w.numpy()) for w in model.weights}

        def get(layer: str, name: str) -> tf.Tensor:
            matches = [
                v for k, v in weights.items() if k.startswith(f"{layer}/") and k.endswith(name)
            ]
            if len(matches) != 1:
                raise KeyError(f"expected one weight {layer}/.../{name}, found {len(matches)}")
            return tf.constant(matches[0])

        self.init_h_kernel, self.init_h_bias = get("init_h", "kernel"), get("init_h", "bias")
        self.init_c_kernel, self.init_c_bias = get("init_c", "kernel"), get("init_c", "bias")
        self.embedding = get("embedding", "embeddings")
        self.kernel = get("lstm", "/kernel")
        self.recurrent_kernel = get("lstm", "recurrent_kernel")
        self.bias = get("lstm", "bias")
        self.out_kernel, self.out_bias = get("logits", "kernel"), get("logits", "bias")
        units, features = config.units, config.feature_dim
        # Batch is dynamic: greedy runs batch 1 on the device, evaluation and beam search more.
        self.init = tf.function(
            self._init,
            input_signature=[tf.TensorSpec([None, features], tf.float32, name="features")],
        )
        self.step = tf.function(
            self._step,
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="token"),
                tf.TensorSpec([None, units], tf.float32, name="h"),
                tf.TensorSpec([None, units], tf.float32, name="c"),
            ],
        )

    def _init(self, features):
        import tensorflow as tf

        h = tf.tanh(tf.matmul(features, self.init_h_kernel) + self.init_h_bias)
        c = tf.matmul(features, self.init_c_kernel) + self.init_c_bias
        return {"h": h, "c": c}

    def _step(self, token, h, c):
        import tensorflow as tf

        x = tf.gather(self.embedding, token)  # [B, E]
        z = tf.matmul(x, self.kernel) + tf.matmul(h, self.recurrent_kernel) + self.bias  # [B, 4U]
        i, f, g, o = tf.split(z, 4, axis=1)  # each [B, U]
        c_next = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h_next = tf.sigmoid(o) * tf.tanh(c_next)
        logits = tf.matmul(h_next, self.out_kernel) + self.out_bias  # [B, V]
        return {"log_probs": tf.nn.log_softmax(logits, axis=-1), "h_next": h_next, "c_next": c_next}


class KerasStepModel:
    """decoding.StepModel over the step module, for evaluating a Keras run in-process."""

    def __init__(self, module: LstmStepModule):
        self.module = module

    def init(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        out = self.module.init(np.asarray(features, dtype=np.float32))
        return (out["h"].numpy(), out["c"].numpy())

    def step(
        self, tokens: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        out = self.module.step(np.asarray(tokens, dtype=np.int32), state[0], state[1])
        return out["log_probs"].numpy(), (out["h_next"].numpy(), out["c_next"].numpy())
