"""Caption decoders: the Keras models that train, and the step functions built from their
weights that export converts and evaluation decodes with.

- lstm (inject, Show and Tell): features -> dense -> (h0, c0); one word per step.
- merge (the seed's family): an LSTM reads the words; the image embedding is added to its
  output at every step; state still carries from word to word.
- blstm (the seed's bidirectional variant): a bidirectional LSTM reads the whole prefix
  and predicts the next word, so each step re-reads the prefix. The image sets the initial
  state of both directions.
- attend: lstm's inject from the mean of the encoder's feature map [B, P, F], plus
  dot-product attention over the map's P positions after every word (the LSTM output is
  the query, as in Luong et al. 2015 and Lu et al. 2017's spatial attention), so each word
  can look at the part of the photo it names. Still one word per step with carried state.
- twoway (Wang et al. 2016, "Image Captioning with Deep Bidirectional LSTMs"): two inject
  LSTMs like lstm's, one generating the caption left to right and one right to left, with
  one word embedding between them; both train together, each decodes a whole caption,
  and the likelier of the two is kept (edge_runtime.decoding.keep_likelier). Not blstm:
  neither direction re-reads anything, each carries its state one word per step.

Step modules are plain LSTM cell math with explicit state, not Keras LSTM layers: the
TFLite converter never fuses a Keras 3 LSTM and turns it into a WHILE loop or Flex ops,
which ai_edge_litert and tflite_runtime cannot run (see DESIGN.md). The BLSTM step is
unrolled over a fixed prefix length, with the padding mask applied as in Keras.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from edgecap.edge_runtime.decoding import StepModel, TwoWayModel
from edgecap.edge_runtime.step_models import BACKWARD_ROLES, DECODER_KINDS, make_step_model

# Layer names of twoway's right-to-left LSTM: its left-to-right one is named as lstm's.
BACKWARD_PREFIX = "backward_"


@dataclass(frozen=True)
class DecoderConfig:
    kind: str = "lstm"  # "lstm" (inject), "merge", "blstm", "attend" or "twoway"
    vocab_size: int = 0  # filled in from the vocabulary
    feature_dim: int = 0  # filled in from the encoder: channels per position
    feature_positions: int = 0  # attend: positions P of the encoder's map; 0: a pooled vector
    embed_dim: int = 128  # word embedding width
    units: int = 256  # LSTM state width (h and c), per direction for blstm
    dropout: float = 0.2  # on features and LSTM outputs, training only
    max_length: int = 20  # longest caption in words, end token excluded

    @property
    def prefix_length(self) -> int:
        """BLSTM input width: <start> plus up to max_length words."""
        return self.max_length + 1

    def to_json(self) -> dict:
        return asdict(self)


def build_training_model(config: DecoderConfig):
    """lstm/merge: features [B, F], tokens [B, T] -> logits [B, T, V] (teacher forcing).
    blstm: features [B, F], prefix [B, L] -> logits [B, V] (one next word per prefix).
    attend: features [B, P, F], tokens [B, T] -> logits [B, T, V].
    twoway: features [B, F], tokens [B, 2T] -> logits [B, 2T, V]: forward then backward."""
    import keras

    layers = keras.layers
    if config.kind not in DECODER_KINDS:
        raise ValueError(f"unknown decoder {config.kind!r}; choose one of {DECODER_KINDS}")
    if config.kind == "attend":
        return _build_attend(config)
    if config.kind == "twoway":
        return _build_twoway(config)
    features = keras.Input((config.feature_dim,), name="features")
    x = layers.Dropout(config.dropout, name="feature_dropout")(features)
    if config.kind == "blstm":
        # Any width up to prefix_length: training cuts each batch to its longest prefix (the
        # masked BLSTM gives the same outputs at any padding); the step functions are unrolled
        # over prefix_length for export.
        prefix = keras.Input((None,), dtype="int32", name="prefix")
        embedded = layers.Embedding(
            config.vocab_size, config.embed_dim, mask_zero=True, name="embedding"
        )(prefix)
        # The image sets the initial state of both directions (inject), so that every word
        # of the prefix is read in the light of the image. A late merge (image added after
        # the BLSTM, as in the seed) reached 0.68 scene accuracy where this reaches > 0.85.
        initial_state = [
            layers.Dense(config.units, activation=activation, name=f"init_{part}_{direction}")(x)
            for direction in ("forward", "backward")
            for part, activation in (("h", "tanh"), ("c", None))
        ]
        # Keras drops the embedding's mask when initial_state is given, so pass it explicitly.
        mask = keras.ops.not_equal(prefix, 0)  # [B, L]: 0 is padding
        text = layers.Bidirectional(layers.LSTM(config.units), name="blstm")(
            embedded, initial_state=initial_state, mask=mask
        )  # [B, 2U]
        text = layers.Dropout(config.dropout, name="text_dropout")(text)
        hidden = layers.Dense(config.units, activation="relu", name="hidden")(text)
        logits = layers.Dense(config.vocab_size, name="logits")(hidden)
        return keras.Model({"features": features, "prefix": prefix}, logits, name="decoder_blstm")

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    embedded = layers.Embedding(
        config.vocab_size, config.embed_dim, mask_zero=True, name="embedding"
    )(tokens)
    if config.kind == "lstm":
        h0 = layers.Dense(config.units, activation="tanh", name="init_h")(x)
        c0 = layers.Dense(config.units, name="init_c")(x)
        seq = layers.LSTM(config.units, return_sequences=True, name="lstm")(
            embedded, initial_state=[h0, c0]
        )
        seq = layers.Dropout(config.dropout, name="output_dropout")(seq)
        logits = layers.Dense(config.vocab_size, name="logits")(seq)
    else:  # merge
        seq = layers.LSTM(config.units, return_sequences=True, name="lstm")(embedded)  # [B, T, U]
        image = layers.Dense(config.units, activation="relu", name="image_embedding")(x)  # [B, U]
        image = layers.Reshape((1, config.units), name="image_per_step")(image)  # [B, 1, U]
        merged = layers.Add(name="merge")(
            [layers.Dropout(config.dropout, name="output_dropout")(seq), image]
        )
        hidden = layers.Dense(config.units, activation="relu", name="hidden")(merged)
        logits = layers.Dense(config.vocab_size, name="logits")(hidden)
    return keras.Model(
        {"features": features, "tokens": tokens}, logits, name=f"decoder_{config.kind}"
    )


def _build_twoway(config: DecoderConfig):
    """Two inject LSTMs in one model, so that the trainer's fit, loss masking and batches
    serve them unchanged: tokens [B, 2T] are the forward inputs then the backward ones
    (inputs.TrainingBatches), split at T; the logits of both are joined the same way."""
    import keras

    layers = keras.layers
    features = keras.Input((config.feature_dim,), name="features")
    tokens = keras.Input((None,), dtype="int32", name="tokens")  # [B, 2T]
    x = layers.Dropout(config.dropout, name="feature_dropout")(features)
    # One embedding for both directions: a word means the same read either way, and each
    # direction's gradient then trains the other's word vectors too.
    embedding = layers.Embedding(
        config.vocab_size, config.embed_dim, mask_zero=True, name="embedding"
    )
    halves = keras.ops.split(tokens, 2, axis=1)  # [B, 2T] -> 2 x [B, T]
    logits = []
    for prefix, half in zip(("", BACKWARD_PREFIX), halves, strict=True):
        h0 = layers.Dense(config.units, activation="tanh", name=f"{prefix}init_h")(x)
        c0 = layers.Dense(config.units, name=f"{prefix}init_c")(x)
        seq = layers.LSTM(config.units, return_sequences=True, name=f"{prefix}lstm")(
            embedding(half), initial_state=[h0, c0]
        )  # [B, T, U]
        seq = layers.Dropout(config.dropout, name=f"{prefix}output_dropout")(seq)
        logits.append(layers.Dense(config.vocab_size, name=f"{prefix}logits")(seq))
    joined = layers.Concatenate(axis=1, name="both_directions")(logits)  # [B, 2T, V]
    return keras.Model({"features": features, "tokens": tokens}, joined, name="decoder_twoway")


def _build_attend(config: DecoderConfig):
    """The attend decoder for training; DecoderStepFunctions._step_attend is the same math per word."""
    import keras

    layers = keras.layers
    if config.feature_positions < 1:
        raise ValueError("the attend decoder needs an encoder feature map (feature_positions)")
    features = keras.Input((config.feature_positions, config.feature_dim), name="features")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    grid = layers.Dropout(config.dropout, name="feature_dropout")(features)  # [B, P, F]
    pooled = layers.GlobalAveragePooling1D(name="pooled")(grid)  # [B, F]
    h0 = layers.Dense(config.units, activation="tanh", name="init_h")(pooled)
    c0 = layers.Dense(config.units, name="init_c")(pooled)
    # Keys and values in one projection: the map is read once per image, not per word.
    # tanh keeps the context in h's range: a position of MobileNetV2's map is sparse with
    # peaks of 6, and the unbounded projection stalled training on Flickr8k (60 steps:
    # accuracy 0.13 against 0.19 with tanh and 0.21 without attention).
    memory = layers.Dense(config.units, activation="tanh", name="attention_memory")(grid)
    # No mask: padding only trails a caption, which a forward LSTM never reads back, and the
    # loss weights padded targets 0; Keras' Dot and Concatenate would not carry one anyway
    # (so Keras divides this loss by every position, padding included, not by the words).
    embedded = layers.Embedding(config.vocab_size, config.embed_dim, name="embedding")(tokens)
    seq = layers.LSTM(config.units, return_sequences=True, name="lstm")(
        embedded, initial_state=[h0, c0]
    )  # [B, T, U]
    # The query's kernel also learns the score's scale (no 1/sqrt(U)). It starts at zero, so
    # attention starts uniform (the context is the mean memory) and sharpens as it learns:
    # zero queries lose nothing, since the scores' gradient reaches the kernel through h.
    query = layers.Dense(
        config.units, use_bias=False, kernel_initializer="zeros", name="attention_query"
    )(seq)  # [B, T, U]
    scores = layers.Dot(axes=(2, 2), name="attention_scores")([query, memory])  # [B, T, P]
    weights = layers.Softmax(axis=-1, name="attention_weights")(scores)
    context = layers.Dot(axes=(2, 1), name="attention_context")([weights, memory])  # [B, T, U]
    joined = layers.Concatenate(name="attention_join")([seq, context])  # [B, T, 2U]
    hidden = layers.Dense(config.units, activation="tanh", name="hidden")(joined)
    hidden = layers.Dropout(config.dropout, name="output_dropout")(hidden)
    logits = layers.Dense(config.vocab_size, name="logits")(hidden)
    return keras.Model({"features": features, "tokens": tokens}, logits, name="decoder_attend")


def _cell_weights(lstm_layer):
    import tensorflow as tf

    cell = lstm_layer.cell
    return tuple(
        tf.constant(np.asarray(w)) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )


def _lstm_cell(x, h, c, weights):
    """One Keras LSTM step (gate order: input, forget, cell, output)."""
    import tensorflow as tf

    kernel, recurrent_kernel, bias = weights
    z = tf.matmul(x, kernel) + tf.matmul(h, recurrent_kernel) + bias  # [B, 4U]
    i, f, g, o = tf.split(z, 4, axis=1)  # each [B, U]
    c_next = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c_next), c_next


class DecoderStepFunctions:
    """tf.functions `init` and `step` over a trained decoder's weights, for every kind.

    Their input signatures name the tensors exactly as the manifest does
    (edge_runtime.step_models.DECODER_TENSORS). Batch is dynamic.
    """

    def __init__(self, model, config: DecoderConfig, layer_prefix: str = ""):
        """`layer_prefix` names the layers of one direction of a twoway model (lstm math)."""
        import tensorflow as tf

        self.config = config
        # twoway: one lstm DecoderStepFunctions per direction; `functions` holds the files' four.
        # (Not self.forward / self.backward: those are blstm's cell weights.)
        self.left_to_right: DecoderStepFunctions | None = None
        self.right_to_left: DecoderStepFunctions | None = None
        if config.kind == "twoway":
            as_lstm = replace(config, kind="lstm")
            self.left_to_right = DecoderStepFunctions(model, as_lstm)
            self.right_to_left = DecoderStepFunctions(model, as_lstm, layer_prefix=BACKWARD_PREFIX)
            self.init, self.step = self.left_to_right.init, self.left_to_right.step
            self.functions = {
                "decoder_init": self.init,
                "decoder_step": self.step,
                BACKWARD_ROLES["decoder_init"]: self.right_to_left.init,
                BACKWARD_ROLES["decoder_step"]: self.right_to_left.step,
            }
            return

        def dense(name: str) -> tuple:
            layer = model.get_layer(layer_prefix + name)
            return tf.constant(np.asarray(layer.kernel)), tf.constant(np.asarray(layer.bias))

        # twoway's two directions share the one embedding (no prefix)
        self.embedding = tf.constant(np.asarray(model.get_layer("embedding").embeddings))
        self.logits = dense("logits")
        units, feature_dim = config.units, config.feature_dim
        feature_shape = [None, feature_dim]
        if config.kind == "attend":
            feature_shape = [None, config.feature_positions, feature_dim]
        features_spec = tf.TensorSpec(feature_shape, tf.float32, name="features")

        def recurrent_step(*carried: tuple[str, list[int]]) -> list:
            """token [B], h and c [B, U], then what the kind carries unchanged, by name."""
            extra = [(name, [units]) for name in ("h", "c")] + list(carried)
            return [tf.TensorSpec([None], tf.int32, name="token")] + [
                tf.TensorSpec([None, *shape], tf.float32, name=name) for name, shape in extra
            ]

        if config.kind == "lstm":
            self.init_h, self.init_c = dense("init_h"), dense("init_c")
            self.cell = _cell_weights(model.get_layer(layer_prefix + "lstm"))
            self.init = tf.function(self._init_inject, input_signature=[features_spec])
            self.step = tf.function(self._step_inject, input_signature=recurrent_step())
        elif config.kind == "merge":
            self.image, self.hidden = dense("image_embedding"), dense("hidden")
            self.cell = _cell_weights(model.get_layer("lstm"))
            self.init = tf.function(self._init_merge, input_signature=[features_spec])
            self.step = tf.function(
                self._step_merge, input_signature=recurrent_step(("image_embedding", [units]))
            )
        elif config.kind == "attend":
            self.init_h, self.init_c = dense("init_h"), dense("init_c")
            self.memory, self.hidden = dense("attention_memory"), dense("hidden")
            self.query = tf.constant(np.asarray(model.get_layer("attention_query").kernel))
            self.cell = _cell_weights(model.get_layer("lstm"))
            self.init = tf.function(self._init_attend, input_signature=[features_spec])
            memory = ("memory", [config.feature_positions, units])  # [B, P, U]
            self.step = tf.function(self._step_attend, input_signature=recurrent_step(memory))
        else:  # blstm
            self.hidden = dense("hidden")
            self.init_states = [
                dense(f"init_{part}_{direction}")
                for direction in ("forward", "backward")
                for part in ("h", "c")
            ]
            blstm = model.get_layer("blstm")
            self.forward, self.backward = (
                _cell_weights(blstm.forward_layer),
                _cell_weights(blstm.backward_layer),
            )
            self.init = tf.function(self._init_blstm, input_signature=[features_spec])
            self.step = tf.function(
                self._step_blstm,
                input_signature=[
                    tf.TensorSpec([None, config.prefix_length], tf.int32, name="prefix"),
                    tf.TensorSpec([None, 4 * units], tf.float32, name="image_embedding"),
                ],
            )
        self.functions = {"decoder_init": self.init, "decoder_step": self.step}

    def _log_probs(self, hidden):
        import tensorflow as tf

        kernel, bias = self.logits
        return tf.nn.log_softmax(tf.matmul(hidden, kernel) + bias, axis=-1)  # [B, V]

    def _init_inject(self, features):
        import tensorflow as tf

        h = tf.tanh(tf.matmul(features, self.init_h[0]) + self.init_h[1])
        c = tf.matmul(features, self.init_c[0]) + self.init_c[1]
        return {"h": h, "c": c}

    def _step_inject(self, token, h, c):
        import tensorflow as tf

        h_next, c_next = _lstm_cell(tf.gather(self.embedding, token), h, c, self.cell)
        return {"log_probs": self._log_probs(h_next), "h_next": h_next, "c_next": c_next}

    def _init_image(self, features):
        import tensorflow as tf

        return {"image_embedding": tf.nn.relu(tf.matmul(features, self.image[0]) + self.image[1])}

    def _init_merge(self, features):
        import tensorflow as tf

        embedding = self._init_image(features)["image_embedding"]
        zeros = tf.zeros_like(embedding)  # [B, U]: merge starts from an empty state
        return {"h": zeros, "c": zeros, "image_embedding": embedding}

    def _step_merge(self, token, h, c, image_embedding):
        import tensorflow as tf

        h_next, c_next = _lstm_cell(tf.gather(self.embedding, token), h, c, self.cell)
        hidden = tf.nn.relu(tf.matmul(h_next + image_embedding, self.hidden[0]) + self.hidden[1])
        return {"log_probs": self._log_probs(hidden), "h_next": h_next, "c_next": c_next}

    def _init_attend(self, features):
        import tensorflow as tf

        state = self._init_inject(tf.reduce_mean(features, axis=1))  # [B, P, F] -> [B, F]
        kernel, bias = self.memory
        # [B, P, F] x [F, U] as one matmul over B*P rows: a plain FULLY_CONNECTED for TFLite.
        positions = self.config.feature_positions
        flat = tf.reshape(features, [-1, self.config.feature_dim])  # [B*P, F]
        memory = tf.reshape(
            tf.tanh(tf.matmul(flat, kernel) + bias), [-1, positions, self.config.units]
        )  # [B*P, U] -> [B, P, U]
        return {**state, "memory": memory}  # memory [B, P, U]

    def _step_attend(self, token, h, c, memory):
        import tensorflow as tf

        h_next, c_next = _lstm_cell(tf.gather(self.embedding, token), h, c, self.cell)
        query = tf.matmul(h_next, self.query)[:, :, None]  # [B, U] -> [B, U, 1]
        # Batched matmuls, as the training model's Dot layers compute them (same sums).
        scores = tf.matmul(memory, query)[:, :, 0]  # [B, P, U] x [B, U, 1] -> [B, P]
        weights = tf.nn.softmax(scores, axis=-1)[:, None, :]  # [B, P] -> [B, 1, P]
        context = tf.matmul(weights, memory)[:, 0, :]  # [B, 1, P] x [B, P, U] -> [B, U]
        joined = tf.concat([h_next, context], axis=1)  # [B, 2U]
        hidden = tf.tanh(tf.matmul(joined, self.hidden[0]) + self.hidden[1])
        return {"log_probs": self._log_probs(hidden), "h_next": h_next, "c_next": c_next}

    def _init_blstm(self, features):
        import tensorflow as tf

        h_fwd, c_fwd, h_bwd, c_bwd = (
            tf.matmul(features, kernel) + bias for kernel, bias in self.init_states
        )
        # [B, 4U]: the initial (h, c) of the forward then the backward direction
        states = [tf.tanh(h_fwd), c_fwd, tf.tanh(h_bwd), c_bwd]
        return {"image_embedding": tf.concat(states, axis=1)}

    def _step_blstm(self, prefix, image_embedding):
        import tensorflow as tf

        x = tf.gather(self.embedding, prefix)  # [B, L, E]
        mask = tf.cast(tf.not_equal(prefix, 0), tf.float32)[:, :, None]  # [B, L, 1]
        h_fwd, c_fwd, h_bwd, c_bwd = tf.split(image_embedding, 4, axis=1)  # each [B, U]

        def run(weights, h, c, steps):
            # Unrolled: L is fixed and small. Masked steps keep the state, as Keras does.
            for t in steps:
                h_new, c_new = _lstm_cell(x[:, t], h, c, weights)
                m = mask[:, t]
                h, c = m * h_new + (1.0 - m) * h, m * c_new + (1.0 - m) * c
            return h

        length = self.config.prefix_length
        text = tf.concat(
            [
                run(self.forward, h_fwd, c_fwd, range(length)),
                run(self.backward, h_bwd, c_bwd, reversed(range(length))),
            ],
            axis=1,
        )  # [B, 2U]
        hidden = tf.nn.relu(tf.matmul(text, self.hidden[0]) + self.hidden[1])
        return {"log_probs": self._log_probs(hidden)}


def keras_step_model(module: DecoderStepFunctions) -> StepModel | TwoWayModel:
    """What a Keras run decodes with: a KerasStepModel, or for twoway a TwoWayModel of one
    per direction (as a twoway bundle's Bundle.step_model is)."""
    if module.left_to_right is not None and module.right_to_left is not None:
        return TwoWayModel(
            KerasStepModel(module.left_to_right), KerasStepModel(module.right_to_left)
        )
    return KerasStepModel(module)


class KerasStepModel:
    """decoding.StepModel over a DecoderStepFunctions, for evaluating a Keras run in-process (one
    direction of a twoway run: see keras_step_model)."""

    def __init__(self, module: DecoderStepFunctions):
        def to_numpy(out) -> dict:
            return {k: v.numpy() for k, v in out.items()}

        self.module = module
        self._impl = make_step_model(
            module.config.kind,
            lambda **kw: to_numpy(module.init(**kw)),
            lambda **kw: to_numpy(module.step(**kw)),
            module.config.prefix_length,
        )

    def init(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._impl.init(features)

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        return self._impl.step(tokens, state)
