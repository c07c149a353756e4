"""Every decoder kind: its step functions, run word by word, give the training model's
log-probabilities (atol 1e-5), in TensorFlow and after conversion to fp32 TFLite."""

import numpy as np
import pytest

from edgecap.edge_runtime.step_models import DECODER_TENSORS, make_step_model
from edgecap.train.decoders import (
    DecoderConfig,
    DecoderStepFunctions,
    KerasStepModel,
    build_training_model,
)

KINDS = ("lstm", "merge", "blstm", "attend")
POSITIONS = 5  # attend reads a feature map of this many positions
# attend's log-probs pass through attention and one more dense layer, summed in another
# order by the step's matmuls than by Keras' layers: float32 rounding of ~6e-6 relative
# on log-probs near -10 (measured); every other kind holds numpy's default rtol (1e-7).
_RTOL = {"lstm": 1e-7, "merge": 1e-7, "blstm": 1e-7, "attend": 1e-5}


def _config(kind):
    return DecoderConfig(
        kind=kind, vocab_size=23, feature_dim=12, embed_dim=8, units=16, max_length=7,
        feature_positions=POSITIONS if kind == "attend" else 0,
    )  # fmt: skip


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module", params=KINDS)
def trained_like(request):
    return _trained_like(request.param)


def _trained_like(kind):
    import keras

    config = _config(kind)
    keras.utils.set_random_seed(7)
    model = build_training_model(config)
    rng = np.random.default_rng(0)
    for w in model.weights:  # larger than the initializer's, so gates saturate differently
        w.assign(np.asarray(w.numpy()) * 3.0 + rng.normal(0, 0.05, w.shape))
    shape = (3, POSITIONS, config.feature_dim) if kind == "attend" else (3, config.feature_dim)
    features = rng.normal(size=shape).astype(np.float32)  # [B, F] or [B, P, F]
    words = rng.integers(4, config.vocab_size, size=(3, config.max_length)).astype(
        np.int32
    )  # [B, T]
    tokens = np.concatenate([np.ones((3, 1), np.int32), words], axis=1)  # <start> first: [B, T + 1]
    return config, model, features, tokens


def _reference(config, model, features, tokens):
    """Log-probs after each prefix tokens[:, :t+1], from the training model: [B, T+1, V]."""
    if config.kind != "blstm":
        logits = np.asarray(model({"features": features, "tokens": tokens}, training=False))
        return _log_softmax(logits)
    out = []
    for t in range(tokens.shape[1]):
        prefix = np.zeros((tokens.shape[0], config.prefix_length), np.int32)  # [B, L], 0-padded
        prefix[:, : t + 1] = tokens[:, : t + 1]
        out.append(
            _log_softmax(
                np.asarray(model({"features": features, "prefix": prefix}, training=False))
            )
        )
    return np.stack(out, axis=1)


def _stepwise(step_model, features, tokens):
    state = step_model.init(features)
    out = []
    for t in range(tokens.shape[1]):
        log_probs, state = step_model.step(tokens[:, t], state)
        out.append(log_probs)
    return np.stack(out, axis=1)


def test_step_module_matches_training_model(trained_like):
    config, model, features, tokens = trained_like
    reference = _reference(config, model, features, tokens)
    stepped = _stepwise(KerasStepModel(DecoderStepFunctions(model, config)), features, tokens)
    np.testing.assert_allclose(stepped, reference, atol=1e-5, rtol=_RTOL[config.kind])
    assert np.abs(reference[:, 1:] - reference[:, :1]).max() > 0.1  # the prefix really matters


def test_step_module_signatures_use_the_manifest_names(trained_like):
    config, model, _, _ = trained_like
    module = DecoderStepFunctions(model, config)
    for role, function in (("decoder_init", module.init), ("decoder_step", module.step)):
        names = [spec.name for spec in function.input_signature]
        assert names == DECODER_TENSORS[config.kind][role]["inputs"]
        outputs = function.get_concrete_function().structured_outputs
        assert sorted(outputs) == sorted(DECODER_TENSORS[config.kind][role]["outputs"])


def test_fp32_tflite_step_matches_training_model(trained_like, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgecap.export import tflite

    config, model, features, tokens = trained_like
    module = DecoderStepFunctions(model, config)
    runners = {}
    for role, function in (("decoder_init", module.init), ("decoder_step", module.step)):
        data = tflite.convert_decoder_function(function, role, "fp32")
        ops = tflite.checked_ops(data, role)
        assert not [op for op in ops if "WHILE" in op or op.startswith("Flex")], ops
        runners[role] = Interpreter(model_content=data).get_signature_runner("serving_default")
    step_model = make_step_model(
        config.kind,
        lambda **kw: runners["decoder_init"](**kw),
        lambda **kw: runners["decoder_step"](**kw),
        config.prefix_length,
    )
    stepped = _stepwise(step_model, features, tokens)
    reference = _reference(config, model, features, tokens)
    np.testing.assert_allclose(stepped, reference, atol=1e-5, rtol=_RTOL[config.kind])


def test_attend_looks_at_the_map_not_only_its_mean():
    """Two maps with the same mean give the attend decoder different words: the step reads
    where things are, which a pooled vector cannot tell apart."""
    config, model, features, tokens = _trained_like("attend")
    shuffled = features[:, ::-1] + 0.0  # the same positions in another order: same mean
    moved = features.copy()
    moved[:, 0] += 2.0
    moved[:, 1] -= 2.0  # mass moved between positions: the mean is unchanged
    step_model = KerasStepModel(DecoderStepFunctions(model, config))
    base = _stepwise(step_model, features, tokens)
    np.testing.assert_allclose(_stepwise(step_model, shuffled, tokens), base, atol=1e-5, rtol=1e-5)
    assert np.abs(_stepwise(step_model, moved, tokens) - base).max() > 1e-3


def _twoway_like():
    """A twoway model with perturbed weights, features, and a forward and a backward
    token sequence ([B, T + 1] each, <start> first)."""
    config, model, features, forward = _trained_like("twoway")
    rng = np.random.default_rng(1)
    backward = forward.copy()
    backward[:, 1:] = rng.integers(4, config.vocab_size, size=backward[:, 1:].shape)
    return config, model, features, forward, backward


def _twoway_reference(model, features, forward, backward):
    """Log-probs of each direction's half of the training model: 2 x [B, T + 1, V]."""
    tokens = np.concatenate([forward, backward], axis=1)  # [B, 2(T + 1)]
    logits = np.asarray(model({"features": features, "tokens": tokens}, training=False))
    reference = _log_softmax(logits)  # [B, 2(T + 1), V]
    return reference[:, : forward.shape[1]], reference[:, forward.shape[1] :]


def test_twoway_step_modules_match_each_half_of_the_training_model(tmp_path):
    import keras

    from edgecap.edge_runtime.decoding import TwoWayModel
    from edgecap.train.decoders import keras_step_model

    config, model, features, forward, backward = _twoway_like()
    # Saved and loaded as training checkpoints it (safe_mode: the split is a Keras op).
    model.save(tmp_path / "twoway.keras")
    model = keras.models.load_model(tmp_path / "twoway.keras", safe_mode=True)
    expected_forward, expected_backward = _twoway_reference(model, features, forward, backward)
    two_way = keras_step_model(DecoderStepFunctions(model, config))
    assert isinstance(two_way, TwoWayModel)
    got_forward = _stepwise(two_way.forward, features, forward)
    got_backward = _stepwise(two_way.backward, features, backward)
    np.testing.assert_allclose(got_forward, expected_forward, atol=1e-5, rtol=1e-7)
    np.testing.assert_allclose(got_backward, expected_backward, atol=1e-5, rtol=1e-7)
    # Two LSTMs, not one read twice: the same words give each direction other log-probs.
    same_words = _stepwise(two_way.backward, features, forward)
    assert np.abs(same_words - got_forward).max() > 0.1


def test_twoway_fp32_tflite_pairs_match_the_training_model():
    from ai_edge_litert.interpreter import Interpreter

    from edgecap.export import tflite

    config, model, features, forward, backward = _twoway_like()
    module = DecoderStepFunctions(model, config)
    assert list(module.functions) == list(DECODER_TENSORS["twoway"])
    runners = {}
    for role, function in module.functions.items():
        names = [spec.name for spec in function.input_signature]
        assert names == DECODER_TENSORS["twoway"][role]["inputs"]
        data = tflite.convert_decoder_function(function, role, "fp32")
        ops = tflite.checked_ops(data, role)
        assert not [op for op in ops if "WHILE" in op or op.startswith("Flex")], ops
        runners[role] = Interpreter(model_content=data).get_signature_runner("serving_default")

    def run(role):
        return lambda **kw: runners[role](**kw)

    two_way = make_step_model(
        "twoway", run("decoder_init"), run("decoder_step"),
        backward=(run("decoder_init_backward"), run("decoder_step_backward")),
    )  # fmt: skip
    expected_forward, expected_backward = _twoway_reference(model, features, forward, backward)
    np.testing.assert_allclose(_stepwise(two_way.forward, features, forward), expected_forward,
                               atol=1e-5, rtol=1e-7)  # fmt: skip
    np.testing.assert_allclose(_stepwise(two_way.backward, features, backward),
                               expected_backward, atol=1e-5, rtol=1e-7)  # fmt: skip


def test_keras_step_model_is_one_step_model_for_every_kind_but_twoway(trained_like):
    """Evaluation's step model: the blstm's cell weights (its module's `forward` and
    `backward`) once passed for a twoway module's two directions."""
    from edgecap.edge_runtime.decoding import TwoWayModel
    from edgecap.train.decoders import keras_step_model

    config, model, features, tokens = trained_like
    step_model = keras_step_model(DecoderStepFunctions(model, config))
    assert isinstance(step_model, KerasStepModel) and not isinstance(step_model, TwoWayModel)
    reference = _reference(config, model, features, tokens)
    np.testing.assert_allclose(_stepwise(step_model, features, tokens), reference, atol=1e-5,
                               rtol=_RTOL[config.kind])  # fmt: skip
