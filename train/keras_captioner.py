"""`KerasCaptioner`: a trained run in Keras with the device Captioner's face.

Same methods as `edge_runtime.captioner.Captioner` — `encode`, `step_model`, `caption`,
`caption_features`, `caption_dataset` — and the same decoding (`decoding.decode_rows` over
the step functions built from the run's weights), so the one scorer, export parity and the
Keras baselines all caption a run the one way a bundle is captioned.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edgecap.edge_runtime.captioner import CaptionResult
from edgecap.edge_runtime.decoding import (
    Decoded,
    DecodeOptions,
    StepModel,
    TwoWayModel,
    decode_rows,
)
from edgecap.edge_runtime.preprocess import Preprocessing, load_pixels, preprocess, to_rgb
from edgecap.edge_runtime.vocab import Vocabulary

from .decoders import DecoderConfig, DecoderStepFunctions, keras_step_model

if TYPE_CHECKING:  # runs imports training, which imports this module
    from .runs import TrainedRun

# Images decoded together by greedy search: Keras' fp32 step gives each row the same
# words at any batch, and one call per word for 256 images is what makes evaluation fast.
GREEDY_BATCH = 256


class KerasCaptioner:
    """Captions with a run's Keras models: `KerasCaptioner.open(run_dir)`, or from the
    models in memory (training's dev score)."""

    def __init__(
        self,
        decoder,
        config: DecoderConfig,
        vocab: Vocabulary,
        encoder=None,
        preprocessing: Preprocessing | None = None,
        decode: DecodeOptions | None = None,
        run: TrainedRun | None = None,
        feature_cache: str | os.PathLike | None = None,
    ):
        self.decoder, self.config, self.vocab = decoder, config, vocab
        self.encoder, self.preprocessing = encoder, preprocessing
        self.decode = decode or DecodeOptions()
        self.run, self.feature_cache = run, feature_cache
        self._step_module: DecoderStepFunctions | None = None
        self._step_model: StepModel | TwoWayModel | None = None

    @classmethod
    def open(
        cls,
        run: str | os.PathLike | TrainedRun,
        decode: DecodeOptions | None = None,
        feature_cache: str | os.PathLike | None = None,
    ) -> KerasCaptioner:
        """A finished run directory (or a loaded one). `feature_cache` is the folder whose
        cached features caption_dataset reuses (None: encode every file)."""
        from .runs import TrainedRun, load_run

        run = run if isinstance(run, TrainedRun) else load_run(run)
        return cls(
            run.decoder, run.decoder_config, run.vocab, run.encoder, run.preprocessing,
            decode, run, feature_cache,
        )  # fmt: skip

    @property
    def step_module(self) -> DecoderStepFunctions:
        """The tf.functions export converts, built from the decoder's weights (their raw
        outputs by name: what export parity compares file by file)."""
        if self._step_module is None:
            self._step_module = DecoderStepFunctions(self.decoder, self.config)
        return self._step_module

    @property
    def step_model(self) -> StepModel | TwoWayModel:
        """The decoding.StepModel over the step functions (for twoway a TwoWayModel of one
        per direction)."""
        if self._step_model is None:
            self._step_model = keras_step_model(self.step_module)
        return self._step_model

    def _pixels(self, image: str | os.PathLike | Image.Image) -> np.ndarray:
        if self.encoder is None or self.preprocessing is None:
            raise RuntimeError("this KerasCaptioner has no encoder: caption features instead")
        if isinstance(image, (str, os.PathLike)):
            return load_pixels(image, self.preprocessing)[None]  # [1, S, S, 3]
        return preprocess(to_rgb(image), self.preprocessing)[None]  # [1, S, S, 3]

    def encode(self, image: str | os.PathLike | Image.Image) -> np.ndarray:
        """Features [1, F] of one image file or PIL image, read as the device reads it."""
        return self.encode_pixels(self._pixels(image))  # [1, F]

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The encoder alone, as Bundle.encode_pixels: pixels [1, S, S, 3] -> features [1, F]."""
        return np.asarray(self.encoder(pixels, training=False))  # [1, F]

    def caption_features(
        self, features: np.ndarray, decode: DecodeOptions | None = None
    ) -> list[Decoded]:
        """The best Decoded caption of each row of features [N, F]."""
        v = self.vocab
        return decode_rows(
            self.step_model, features, v.start_id, v.end_id, self.config.max_length,
            decode or self.decode, greedy_batch=GREEDY_BATCH,
        )  # fmt: skip

    def caption(
        self, image: str | os.PathLike | Image.Image, decode: DecodeOptions | None = None
    ) -> CaptionResult:
        """Caption one image file or PIL image."""
        t0 = time.perf_counter()
        features = self.encode(image)  # [1, F]
        t1 = time.perf_counter()
        decoded = self.caption_features(features, decode)[0]
        t2 = time.perf_counter()
        timings = {"encoder": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        return CaptionResult(
            self.vocab.decode(decoded.tokens), decoded.tokens, decoded.score, timings
        )

    def texts(self, features: np.ndarray, decode: DecodeOptions | None = None) -> list[str]:
        """Caption text of each row of features [N, F]."""
        return [self.vocab.decode(d.tokens) for d in self.caption_features(features, decode)]

    def caption_dataset(
        self, dataset, ids: Sequence[str], decode: DecodeOptions | None = None
    ) -> list[str]:
        """Captions of a CaptionDataset's images, in order. With a feature cache, and ids
        that begin one of its splits, their features come from the cache as training
        cached them (extracting the split once if need be); otherwise each file is
        encoded here, as caption() reads it."""
        features = self._cached_features(dataset, ids)
        if features is None:
            features = np.concatenate([self.encode(dataset.image_path(i)) for i in ids])  # [N, F]
        return self.texts(features, decode)

    def _cached_features(self, dataset, ids: Sequence[str]) -> np.ndarray | None:
        if self.run is None or self.feature_cache is None or not ids:
            return None
        from .encoders import get_encoder_spec
        from .features import extract_features

        for split, members in dataset.splits.items():
            if list(members[: len(ids)]) == list(ids):
                spec = get_encoder_spec(self.run.config.encoder.name)
                features = extract_features(
                    dataset, split, spec, feature_cache_weights(self.run, spec),
                    self.run.encoder, self.feature_cache, prep=self.run.preprocessing,
                )  # fmt: skip
                return features[: len(ids)]  # [N, F]
        return None


def feature_cache_weights(run: TrainedRun, spec) -> str:
    """The weights the run's features were cached under, as training named them: the
    ImageNet or file weights the encoder was built from, else (random weights, or an
    encoder that `caption-train finetune` trained) the run's encoder.keras. So
    evaluation reuses training's feature cache instead of extracting every image again."""
    from .encoders import resolve_weights

    if run.config.encoder_trained:  # trained past the weights it was built from
        return str(run.path / "encoder.keras")
    try:
        weights = resolve_weights(spec, run.config.train.weights)
    except (FileNotFoundError, ValueError):
        weights = None  # the weights file moved: key on the run's own encoder file
    return str(run.path / "encoder.keras") if weights is None else weights


def caption_cached(
    decoder, config: DecoderConfig, vocab: Vocabulary, features: np.ndarray, ids: Sequence[str]
) -> dict[str, str]:
    """Greedy captions {image id: text} of cached features [N, F] by a decoder in memory
    (training's dev score and end-of-run evaluation)."""
    texts = KerasCaptioner(decoder, config, vocab).texts(features)
    return dict(zip(ids, texts, strict=True))
