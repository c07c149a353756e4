"""Encoder registry: each CNN's input size, preprocessing, and how to build it with weights
`imagenet` (Keras downloads them on a machine with internet), `none`, or a local file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgecap.edge_runtime.preprocess import Preprocessing

ASSETS = Path(__file__).parent / "assets"
SYNTH_ENCODER_FILE = ASSETS / "mobilenet_synth.keras"
# BatchNormalization momentum for encoders trained from scratch here. keras.applications uses
# 0.999, whose moving statistics lag so far behind on a short run that every image got the
# same caption; 0.9 tracks them.
SCRATCH_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # registry name; one name per (family, width), e.g. mobilenet_v2_035
    input_size: int
    feature_dim: int
    build: Callable[..., object]  # (weights, input_size, alpha) -> keras.Model image -> [F]
    default_weights: str
    description: str
    alpha: float | None = None  # Keras width multiplier; None for models that have none
    family: str = ""  # the registry name of this architecture at alpha 1.0 ("" = own name)

    @property
    def preprocessing(self) -> Preprocessing:
        # Every registered model takes "tf"-mode input ([-1, 1], RGB); MobileNetV3 is built
        # with include_preprocessing=False so that the manifest holds the only copy of it.
        return Preprocessing(input_size=self.input_size, scale=1.0 / 127.5, offset=-1.0)


def _applications(fn_name: str, **kwargs) -> Callable[..., object]:
    def build(weights: str | None, input_size: int, alpha: float | None = None):
        import keras

        fn = getattr(keras.applications, fn_name)
        if alpha is not None:
            kwargs["alpha"] = alpha
        return fn(
            include_top=False,
            weights=weights,
            pooling="avg",
            input_shape=(input_size, input_size, 3),
            **kwargs,
        )

    return build


def spatial_encoder(pooled):
    """The feature map under an encoder's global pooling, as positions: [B, H*W, F].

    For keras.applications models that is the input of their GlobalAveragePooling2D; for
    mobilenet_synth, which flattens its map into a dense embedding, its 6 x 6 squeezed map.
    The weights are the pooled encoder's own, so both read a photo alike.
    """
    import keras

    pool = [
        layer for layer in pooled.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    ]
    if pool:
        grid = pool[-1].input
    elif "squeeze" in [layer.name for layer in pooled.layers]:
        grid = pooled.get_layer("squeeze").output
    else:
        raise ValueError(f"{pooled.name}: no feature map found under its pooling")
    _, height, width, channels = grid.shape
    positions = keras.layers.Reshape((height * width, channels), name="positions")(grid)
    return keras.Model(pooled.input, positions, name=f"{pooled.name}_map")


def _make_divisible(value: float, divisor: int = 8) -> int:
    """keras.applications' channel rounding (MobileNetV2's last layer above alpha 1)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# Feature width per width-multiplied family, as keras.applications builds them: v1's last
# block has 1024 * alpha filters; V2 keeps 1280 up to alpha 1 and widens only above it.
WIDTH_FEATURES: dict[str, Callable[[float], int]] = {
    "mobilenet": lambda alpha: int(1024 * alpha),
    "mobilenet_v2": lambda alpha: 1280 if alpha <= 1.0 else _make_divisible(1280 * alpha),
}
# The widths Keras publishes ImageNet weights for; others build (weights none or a file).
IMAGENET_ALPHAS = {"mobilenet": (0.25, 0.5, 0.75, 1.0), "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)}  # fmt: skip


# (filters, stride) of each depthwise-separable block after the stem: 96 px -> 6 x 6.
SYNTH_BLOCKS = ((48, 1), (64, 2), (64, 1), (96, 2), (96, 1), (128, 2), (128, 1))


def build_synth_backbone(input_size: int = 96, embedding_dim: int = 256):
    """A short MobileNet (v1 blocks: depthwise 3x3 + pointwise 1x1, BN, ReLU6) with a spatial
    embedding: the encoder that learns the synthetic scenes.

    Why not keras.applications' MobileNet at full depth: trained from scratch on a few
    thousand images, MobileNet v1 (alpha 0.25) and V2 (alpha 0.35) had learned no colours
    after 6 epochs here, while these 7 blocks had learned most of them in 4.
    Why no global average pooling: it throws away where things are, and the captions must
    say which object is left of which; the last 6 x 6 map is squeezed and flattened instead.
    """
    import keras

    layers = keras.layers
    image = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False, name="stem")(image)
    x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, (filters, stride) in enumerate(SYNTH_BLOCKS):
        x = layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw"
        )(x)
        x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"block{i}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"block{i}_pw")(x)
        x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"block{i}_pw_bn")(x)
        x = layers.ReLU(6.0, name=f"block{i}_pw_relu")(x)
    grid = layers.Conv2D(32, 1, activation="relu", name="squeeze")(x)  # [B, 6, 6, 32]
    flat = layers.Flatten(name="flatten")(grid)  # [B, 1152]
    features = layers.Dense(embedding_dim, activation="relu", name="embedding")(flat)
    return keras.Model(image, features, name="mobilenet_synth")


def _build_synth(weights: str | None, input_size: int, alpha: float | None = None):
    import keras

    if weights is None:
        return build_synth_backbone(input_size)
    model = keras.models.load_model(weights, safe_mode=True, compile=False)
    if model.input_shape[1:3] != (input_size, input_size):
        raise ValueError(
            f"{weights}: encoder takes {model.input_shape[1:3]}, registry says {input_size}"
        )
    return model


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "mobilenet",
            224,
            1024,
            _applications("MobileNet"),
            "imagenet",
            "MobileNet v1, alpha 1.0 (the seed's)",
            alpha=1.0,
        ),
        EncoderSpec(
            "mobilenet_025",
            224,
            256,
            _applications("MobileNet"),
            "imagenet",
            "MobileNet v1, alpha 0.25: the smallest",
            alpha=0.25,
            family="mobilenet",
        ),
        EncoderSpec(
            "mobilenet_v2",
            224,
            1280,
            _applications("MobileNetV2"),
            "imagenet",
            "MobileNetV2, alpha 1.0: the recommended edge encoder",
            alpha=1.0,
        ),
        EncoderSpec(
            "mobilenet_v2_035",
            224,
            1280,
            _applications("MobileNetV2"),
            "imagenet",
            "MobileNetV2, alpha 0.35",
            alpha=0.35,
            family="mobilenet_v2",
        ),
        EncoderSpec(
            "mobilenet_v3_small",
            224,
            576,
            _applications("MobileNetV3Small", include_preprocessing=False),
            "imagenet",
            "MobileNetV3-Small",
        ),
        EncoderSpec(
            "mobilenet_v3_large",
            224,
            960,
            _applications("MobileNetV3Large", include_preprocessing=False),
            "imagenet",
            "MobileNetV3-Large",
        ),
        EncoderSpec(
            "inception_v3",
            299,
            2048,
            _applications("InceptionV3"),
            "imagenet",
            "InceptionV3 (the seed's)",
        ),
        EncoderSpec(
            "mobilenet_synth",
            96,
            256,
            _build_synth,
            str(SYNTH_ENCODER_FILE),
            "7-block MobileNet v1-style CNN at 96 px, pretrained on synthetic scenes (`make encoder`); the offline demo's",
        ),
    )
}


def width_name(family: str, alpha: float) -> str:
    """The registry name of `family` at width `alpha`: mobilenet_v2 at 0.35 -> mobilenet_v2_035."""
    return family if alpha == 1.0 else f"{family}_{round(alpha * 100):03d}"


def get_encoder_spec(name: str, alpha: float | None = None) -> EncoderSpec:
    """The registered encoder `name`, or its family at width `alpha` (e.g. mobilenet_v2, 0.5).

    Every width has one name (width_name), so that run configs, feature caches and
    manifests never spell the same model two ways.
    """
    spec = ENCODERS.get(name) or _parse_width_name(name)
    if spec is None:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if alpha is None or alpha == spec.alpha:
        return spec
    family = spec.family or spec.name
    if family not in WIDTH_FEATURES:
        widths = ", ".join(WIDTH_FEATURES)
        raise ValueError(f"encoder {name!r} has no width multiplier; --alpha works with {widths}")
    if not 0.1 <= alpha <= 2.0:
        raise ValueError(f"--alpha {alpha} is out of range; use a width between 0.1 and 2.0")
    registered = ENCODERS.get(width_name(family, alpha))
    if registered is not None and registered.alpha == alpha:
        return registered
    base = ENCODERS[family]
    return replace(
        base,
        name=width_name(family, alpha),
        feature_dim=WIDTH_FEATURES[family](alpha),
        alpha=alpha,
        family=family,
        description=f"{base.description.split(',')[0]}, alpha {alpha}",
    )


def resolve_weights(spec: EncoderSpec, weights: str | None) -> str | None:
    """'imagenet' | 'none' | a local file -> what the builder takes. Checks that a file exists."""
    weights = spec.default_weights if weights in (None, "default") else weights
    if weights == "none":
        return None
    if weights == "imagenet":
        if spec.name == "mobilenet_synth":
            raise ValueError(
                "mobilenet_synth has no ImageNet weights; use its default file or 'none'"
            )
        return "imagenet"
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"{weights}: encoder weights file not found. Pass --weights imagenet, none, or an existing file"
            + (
                " (run `make encoder` to rebuild the synthetic encoder)"
                if spec.name == "mobilenet_synth"
                else ""
            )
        )
    return weights


def build_encoder(name: str, weights: str = "default", spatial: bool = False):
    """A Keras model: preprocessed image [B, S, S, 3] -> features [B, F], or with `spatial`
    the feature map under the pooling, [B, P, F] (P = H*W positions), for the attend decoder.

    `name` is a registry name (widths included, e.g. mobilenet_v2_035, or any name
    width_name gives); `weights`: "imagenet", "none", a file, or "default".
    """
    spec = get_encoder_spec(name)
    resolved = resolve_weights(spec, weights)
    family = spec.family or spec.name
    if resolved == "imagenet" and spec.alpha not in IMAGENET_ALPHAS.get(family, (spec.alpha,)):
        raise ValueError(
            f"Keras has no ImageNet weights for {spec.name} (alpha {spec.alpha}); choose an "
            f"alpha in {IMAGENET_ALPHAS[family]}, or pass --weights FILE or none"
        )
    try:
        pooled = spec.build(resolved, spec.input_size, spec.alpha)
    except ValueError as exc:
        if resolved in (None, "imagenet"):
            raise
        # Keras' message for a file of another architecture names layers, not the file.
        raise ValueError(
            f"{resolved}: these weights do not fit {spec.name} ({exc}); pass the weights "
            f"file made for {spec.description}"
        ) from None
    return spatial_encoder(pooled) if spatial else pooled


def _parse_width_name(name: str) -> EncoderSpec | None:
    """The spec behind a width name that width_name made (mobilenet_v2_050), else None."""
    for family in WIDTH_FEATURES:
        code = name.removeprefix(f"{family}_")
        if code != name and code.isdigit() and len(code) == 3 and int(code) > 0:
            return get_encoder_spec(family, int(code) / 100)
    return None
