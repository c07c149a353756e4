import numpy as np
import pytest

from edgecap.train.encoders import ENCODERS, build_encoder, get_encoder_spec, resolve_weights

SEED_SIZES = {
    "mobilenet": 224,
    "mobilenet_v2": 224,
    "mobilenet_v3_small": 224,
    "mobilenet_v3_large": 224,
    "inception_v3": 299,
}


def test_registry_sizes_and_preprocessing():
    assert set(SEED_SIZES) | {"mobilenet_synth", "mobilenet_025", "mobilenet_v2_035"} == set(
        ENCODERS
    )
    for name, size in SEED_SIZES.items():
        spec = get_encoder_spec(name)
        assert spec.input_size == size and spec.default_weights == "imagenet"
        assert (spec.preprocessing.scale, spec.preprocessing.offset) == (1 / 127.5, -1.0)
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        get_encoder_spec("resnet")


def test_width_multipliers_have_one_name_each():
    assert get_encoder_spec("mobilenet_v2", 0.35) is ENCODERS["mobilenet_v2_035"]
    assert get_encoder_spec("mobilenet", 0.25) is ENCODERS["mobilenet_025"]
    assert get_encoder_spec("mobilenet_025", 1.0) is ENCODERS["mobilenet"]
    half = get_encoder_spec("mobilenet_v2", 0.5)
    assert (half.name, half.alpha, half.feature_dim) == ("mobilenet_v2_050", 0.5, 1280)
    assert get_encoder_spec("mobilenet_v2_050") == half  # the name alone says the width
    assert get_encoder_spec("mobilenet_v2", 1.4).feature_dim == 1792  # V2 widens above 1
    assert get_encoder_spec("mobilenet", 0.5).feature_dim == 512
    with pytest.raises(ValueError, match="encoder 'inception_v3' has no width multiplier"):
        get_encoder_spec("inception_v3", 0.5)
    with pytest.raises(ValueError, match="Keras has no ImageNet weights for mobilenet_v2_060"):
        build_encoder("mobilenet_v2_060", "imagenet")


def test_alpha_flag_names_the_encoder(tmp_path):
    from edgecap.train.cli_train import _train_parser, build_config

    args = ["--data", "d", "--out", "o", "--encoder", "mobilenet_v2", "--alpha", "0.35"]
    assert build_config(_train_parser().parse_args(args)).encoder == "mobilenet_v2_035"
    preset = ["--data", "d", "--out", "o", "--preset", "seed-mobilenet-lstm", "--alpha", "0.25"]
    assert build_config(_train_parser().parse_args(preset)).encoder == "mobilenet_025"


@pytest.mark.parametrize("name", ["mobilenet_025", "mobilenet_v2_035"])
def test_width_variants_build_to_their_feature_width(name):
    spec = get_encoder_spec(name)
    model = build_encoder(name, "none")
    assert model.output_shape == (None, spec.feature_dim)


def test_weights_choices(tmp_path):
    spec = get_encoder_spec("mobilenet")
    assert resolve_weights(spec, "imagenet") == "imagenet"
    assert resolve_weights(spec, "none") is None
    with pytest.raises(FileNotFoundError, match="nothing.h5: encoder weights file not found"):
        resolve_weights(spec, str(tmp_path / "nothing.h5"))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_synth"])
def test_build_without_weights_gives_feature_vectors(name):
    spec = get_encoder_spec(name)
    model = build_encoder(name, "none")
    out = np.asarray(
        model(np.zeros((1, spec.input_size, spec.input_size, 3), np.float32), training=False)
    )
    assert out.shape == (1, spec.feature_dim)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["mobilenet", "mobilenet_v2", "mobilenet_v3_large", "inception_v3"]
)
def test_build_every_seed_encoder_without_weights(name):
    test_build_without_weights_gives_feature_vectors(name)


def test_the_feature_map_is_what_the_pooled_features_average():
    """spatial=True (the attend decoder's encoder) gives the map under the pooling, with the
    pooled encoder's own weights: its mean over positions is the pooled vector."""
    from edgecap.train.encoders import spatial_encoder

    pooled = build_encoder("mobilenet_v2_035", "none")
    grid = spatial_encoder(pooled)
    assert grid.output_shape == (None, 49, 1280)  # 224 px / 32 = 7 x 7 positions
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(grid(pixels)).mean(axis=1), np.asarray(pooled(pixels)), atol=1e-5
    )
    synth = build_encoder("mobilenet_synth", spatial=True)  # its squeezed 6 x 6 map
    assert synth.output_shape == (None, 36, 32)


def test_shipped_demo_encoder_loads_safely():
    spec = get_encoder_spec("mobilenet_synth")
    model = build_encoder("mobilenet_synth")  # the file in train/assets, loaded with safe_mode
    assert model.output_shape == (None, spec.feature_dim)


def test_encoder_recipe_reproduces_at_tiny_scale(tmp_path):
    """`make encoder`, shrunk: synth -> pretrain -> a loadable encoder file."""
    from edgecap.train.pretrain_encoder import PretrainConfig, pretrain
    from edgecap.train.synthetic import generate

    generate(tmp_path / "data", 48, seed=5, progress=False)
    result = pretrain(
        tmp_path / "data", tmp_path / "enc.keras", PretrainConfig(epochs=1, batch_size=16)
    )
    assert set(result["dev_accuracy"]) >= {"axis", "first_color", "second_shape"}
    model = build_encoder("mobilenet_synth", str(tmp_path / "enc.keras"))
    assert model(np.zeros((2, 96, 96, 3), np.float32)).shape == (2, 256)
