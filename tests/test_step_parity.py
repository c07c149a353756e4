"""The step model, run word by word, must give the training model's logits (atol 1e-5)."""

import numpy as np
import pytest

from edgecap.train.decoders import (
    DecoderConfig,
    KerasStepModel,
    LstmStepModule,
    build_training_model,
)

CONFIG = DecoderConfig(vocab_size=23, feature_dim=12, embed_dim=8, units=16, max_length=9)


@pytest.fixture(scope="module")
def model_and_inputs():
    import keras

    keras.utils.set_random_seed(4)
    model = build_training_model(CONFIG)
    # Random weights are small; scale them up so that gates saturate differently per step.
    for w in model.weights:
        w.assign(np.asarray(w.numpy()) * 3.0 + np.random.default_rng(0).normal(0, 0.05, w.shape))
    rng = np.random.default_rng(1)
    features = rng.normal(size=(3, CONFIG.feature_dim)).astype(np.float32)  # [B, F]
    tokens = rng.integers(4, CONFIG.vocab_size, size=(3, CONFIG.max_length)).astype(
        np.int32
    )  # [B, T]
    tokens[:, 0] = 1  # <start>
    return model, features, tokens


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _stepwise(step_model, features, tokens):
    state = step_model.init(features)
    out = []
    for t in range(tokens.shape[1]):
        log_probs, state = step_model.step(tokens[:, t], state)
        out.append(log_probs)
    return np.stack(out, axis=1)  # [B, T, V]


def test_step_module_matches_training_model(model_and_inputs):
    model, features, tokens = model_and_inputs
    reference = _log_softmax(
        np.asarray(model({"features": features, "tokens": tokens}, training=False))
    )  # [B, T, V]
    stepped = _stepwise(KerasStepModel(LstmStepModule(model, CONFIG)), features, tokens)
    np.testing.assert_allclose(stepped, reference, atol=1e-5)
    assert (
        np.abs(reference[:, 1:] - reference[:, :1]).max() > 0.1
    )  # the state really changes the output


def test_exported_fp32_tflite_step_matches_training_model(model_and_inputs):
    from edgecap.edge_runtime.backends import TFLiteModel
    from edgecap.edge_runtime.captioner import _BundleStepModel
    from edgecap.export import tflite

    model, features, tokens = model_and_inputs
    module = LstmStepModule(model, CONFIG)
    init_bytes = tflite.convert_decoder_function(module.init, "fp32")
    step_bytes = tflite.convert_decoder_function(module.step, "fp32")
    assert not [op for op in tflite.check_builtin_only(step_bytes, "step") if op.startswith("Flex")]

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "init.tflite").write_bytes(init_bytes)
        (Path(tmp) / "step.tflite").write_bytes(step_bytes)
        bundle_steps = _BundleStepModel(
            TFLiteModel(Path(tmp) / "init.tflite"), TFLiteModel(Path(tmp) / "step.tflite")
        )
        stepped = _stepwise(bundle_steps, features, tokens)
    reference = _log_softmax(
        np.asarray(model({"features": features, "tokens": tokens}, training=False))
    )
    np.testing.assert_allclose(stepped, reference, atol=1e-5)
