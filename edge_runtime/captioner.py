"""`Captioner`: a bundle on the device. The encoder runs once per image, then the decoder
steps word by word through the shared decoding code."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .bundle import Bundle, RuntimeOptions
from .decoding import Decoded, DecodeOptions, StepModel, TwoWayModel, decode_rows
from .errors import ImageError
from .preprocess import load_pixels, preprocess, to_rgb, upright

ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass
class CaptionResult:
    text: str  # the caption, normalized words joined by spaces
    tokens: list[int]  # word ids, without start and end
    score: float  # sum of log-probabilities of the chosen words
    timings_ms: dict[str, float] = field(
        default_factory=dict
    )  # preprocess, encoder, decoder, total

    def __str__(self) -> str:
        return self.text


class Captioner:
    """Captions images with an opened Bundle: `Captioner(Bundle.open(path))`, or
    `Captioner.open(path, RuntimeOptions(...), DecodeOptions(...))`; `Captioner.open()`
    opens the built-in model. close() or `with`.

    Thread-safe: one Captioner (or one Bundle under several Captioners) may be shared by
    threads, and every caption equals the one the same call gives alone. A TFLite model
    runs one call at a time (a lock per model: the encoder and the decoder of one bundle
    still overlap); onnxruntime's sessions run calls side by side. Close it only once the
    other threads are done with it."""

    def __init__(self, bundle: Bundle, decode: DecodeOptions | None = None):
        self.bundle = bundle
        self.decode = decode or DecodeOptions()
        self.manifest, self.vocab = bundle.manifest, bundle.vocab
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None = None,
        runtime: RuntimeOptions | None = None,
        decode: DecodeOptions | None = None,
    ) -> Captioner:
        """A bundle folder, a built-in model's name, or None for the default built-in model
        (the Flickr8k model that ships with the package)."""
        return cls(Bundle.open(path, runtime), decode)

    @property
    def step_model(self) -> StepModel | TwoWayModel:
        """The decoding.StepModel over the bundle's decoder files (a TwoWayModel of two for a
        twoway bundle), for parity checks and for tools that decode with their own settings."""
        return self.bundle.step_model

    def _pixels(self, image: ImageInput, bgr: bool) -> np.ndarray:
        """The encoder's input [1, S, S, 3] for a path, PIL image or array."""
        prep = self.manifest.preprocessing
        if isinstance(image, (str, os.PathLike)):
            return load_pixels(image, prep)[None]
        if isinstance(image, Image.Image):
            # EXIF orientation applies to a caller's PIL image as to a path (docs/cli.md).
            return preprocess(to_rgb(upright(image)), prep)[None]
        if isinstance(image, np.ndarray):
            if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
                raise ImageError(f"image array must hold numbers, got dtype {image.dtype}")
            if image.ndim == 2:
                gray = np.asarray(image, dtype=np.uint8)  # [H, W]
                return preprocess(np.repeat(gray[..., None], 3, axis=2), prep)[None]
            if image.ndim != 3 or image.shape[2] not in (3, 4):
                raise ImageError(
                    f"image array must be [H, W], [H, W, 3] or [H, W, 4], got {image.shape}"
                )
            # A uint8 frame goes in as it is (no copy, no channel swap at full size):
            # preprocess swaps BGR after the resize. Alpha is dropped (a view).
            array = np.asarray(image[..., :3], dtype=np.uint8)  # [H, W, 3]
            return preprocess(array, prep, bgr=bgr)[None]  # [1, S, S, 3]
        raise ImageError(
            f"cannot caption an object of type {type(image).__name__}; pass a path, PIL image or array"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Captioner is closed")

    def encode(self, image: ImageInput, bgr: bool = False) -> np.ndarray:
        """Features [1, F] of one image: preprocessing and the encoder, no decoding."""
        self._check_open()
        return self.bundle.encode_pixels(self._pixels(image, bgr))  # [1, F]

    def caption(
        self, image: ImageInput, bgr: bool = False, decode: DecodeOptions | None = None
    ) -> CaptionResult:
        """Caption one image: a file path, a PIL image, or a uint8 array (RGB, or BGR with
        bgr=True); `decode` overrides this captioner's DecodeOptions for this call.

        A path's or a PIL image's EXIF orientation is applied (a photo taken sideways is
        captioned upright); an array has no EXIF, so it is taken as it is: turn it first.
        Safe to call from several threads at once on one Captioner (each model runs one
        call at a time; docs/cli.md "Python API")."""
        self._check_open()
        t0 = time.perf_counter()
        pixels = self._pixels(image, bgr)  # [1, S, S, 3]
        t1 = time.perf_counter()
        features = self.bundle.encode_pixels(pixels)  # [1, F]
        t2 = time.perf_counter()
        decoded = self.caption_features(features, decode)[0]
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "encoder": (t2 - t1) * 1e3,
            "decoder": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return CaptionResult(
            self.vocab.decode(decoded.tokens), decoded.tokens, decoded.score, timings
        )

    def caption_features(
        self, features: np.ndarray, decode: DecodeOptions | None = None
    ) -> list[Decoded]:
        """The best Decoded caption of each row of features [N, F]. Rows go through the step
        model one at a time, as caption() sends them: a quantized step's kernels may round
        a batch differently from one image."""
        m = self.manifest
        options = decode or self.decode
        return decode_rows(
            self.step_model, features, m.start_id, m.end_id, m.max_length, options,
            length_penalty=m.length_penalty,
        )  # fmt: skip

    def caption_dataset(
        self, dataset, ids: Sequence[str], decode: DecodeOptions | None = None
    ) -> list[str]:
        """Captions of a CaptionDataset's images, in order, each from its file as
        caption() reads it (the one scorer's way into a face)."""
        return [self.caption(dataset.image_path(i), decode=decode).text for i in ids]

    def caption_stream(
        self, images: Iterable[ImageInput], bgr: bool = False
    ) -> Iterator[CaptionResult]:
        """Caption images one after another as they come (arrays are RGB, or BGR with bgr=True).

        For video files and cameras, with frame skipping and dropped-frame accounting, see
        edge_runtime.stream.caption_video.
        """
        for image in images:
            yield self.caption(image, bgr=bgr)

    @property
    def backends(self) -> dict[str, str]:
        """What runs each model, e.g. {'encoder': 'ai_edge_litert', ...}."""
        return self.bundle.backends

    @property
    def delegates(self) -> dict[str, str | None]:
        """What each TFLite model runs on, e.g. {'encoder': 'xnnpack', ...} (Bundle.delegates)."""
        return self.bundle.delegates

    def close(self) -> None:
        self.bundle.close()
        self._closed = True

    def __enter__(self) -> Captioner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
