"""`Captioner`: a bundle on the device. The encoder runs once per image, then the decoder
steps word by word through the shared decoding code."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .backends import (
    LiteRtCompiledModel,
    OnnxModel,
    TFLiteModel,
    onnx_accelerator_providers,
)
from .decoding import Decoded, StepModel, beam_search, greedy_decode
from .errors import BackendError, BundleError, ImageError
from .manifest import Manifest, load_manifest
from .preprocess import load_pixels, preprocess, to_rgb
from .step_models import make_step_model
from .vocab import Vocabulary


@dataclass
class CaptionerOptions:
    """Settings of a Captioner."""

    backend: str = "auto"
    """'auto' follows the bundle's model_format (TFLite: ai_edge_litert, else tflite_runtime;
    ONNX: onnxruntime). 'litert' and 'tflite-runtime' need a TFLite bundle, 'onnx' an ONNX
    one: naming a backend is a promise about what runs, so a mismatch is an error, not a
    silent switch."""

    providers: list[str] | None = None
    """onnxruntime execution providers, in order of preference (e.g. ['CUDAExecutionProvider',
    'CPUExecutionProvider']); None runs on the CPU. ONNX bundles only: a TFLite backend has
    no providers, so setting them for one is an error rather than ignored."""

    num_threads: int | None = None
    """CPU threads per model; None uses every core this process may run on (LiteRT's own
    default leaves cores idle: on 2 cores the real MobileNetV2 encoder took 3.6 ms with it
    and 2.2 ms with 2 threads). TFLite runs its CPU kernels through XNNPACK, which LiteRT
    applies by default; onnxruntime's default is already one thread per physical core."""

    accelerator: str = "cpu"
    """'cpu', or 'gpu': LiteRT's GPU accelerator for TFLite bundles, or the first GPU
    provider onnxruntime has (TensorRT, CUDA, ROCm, OpenVINO, CoreML, DirectML) for ONNX
    ones. Without one, loading fails and says what was tried; it never falls back to the
    CPU quietly."""

    accelerate_decoder: bool = False
    """With accelerator 'gpu', also put the decoder on it. Off by default: a step is a few
    small matrix products, so on a GPU it costs more in launches and host-device copies
    than it saves, once per word; the encoder is where a GPU pays."""

    show_backend_logs: bool = False
    """Let LiteRT's own INFO lines (e.g. "Created TensorFlow Lite XNNPACK delegate for
    CPU.") through to stderr while the models load. Off by default, so they do not
    interleave with the captions; warnings and errors always come through."""

    max_length: int | None = None
    """Longest caption in words; None uses the bundle's max_caption_length."""

    verify_hashes: bool = True
    """Check every file's SHA-256 against the manifest before loading it."""

    beam_width: int = 1
    """1 decodes greedily; k > 1 runs beam search with all k hypotheses in one step call."""

    length_penalty: float = 0.0
    """Beam search ranks captions by score / (words + 1) ** length_penalty."""


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


# Backend models, one per role; all three classes take and return named float32 numpy arrays,
# which is what step_models' init_fn / step_fn expect.
BackendModel = TFLiteModel | LiteRtCompiledModel | OnnxModel

# Which model format each explicit backend runs.
BACKEND_FORMATS = {"litert": "tflite", "tflite-runtime": "tflite", "onnx": "onnx"}
BACKENDS = ("auto", *BACKEND_FORMATS)
ACCELERATORS = ("cpu", "gpu")


class Captioner:
    """Captions images with a bundle. Use `Captioner.from_bundle(path)`; close() or `with`."""

    def __init__(
        self,
        manifest: Manifest,
        vocab: Vocabulary,
        models: dict[str, BackendModel],
        options: CaptionerOptions,
    ):
        self.manifest, self.vocab, self.models, self.options = manifest, vocab, models, options
        # The same state bookkeeping as a Keras run's evaluation, over this bundle's backend
        # models (TFLite or ONNX alike): greedy_decode and beam_search never see the format.
        self._step_model = make_step_model(
            manifest.decoder_kind,
            models["decoder_init"],
            models["decoder_step"],
            manifest.prefix_length,
        )
        self._closed = False

    @property
    def step_model(self) -> StepModel:
        """The decoding.StepModel over the bundle's decoder files, for parity checks and for
        tools that decode with their own settings."""
        return self._step_model

    @classmethod
    def from_bundle(
        cls, path: str | os.PathLike, options: CaptionerOptions | None = None
    ) -> Captioner:
        options = options or CaptionerOptions()
        if options.backend not in BACKENDS:
            raise BackendError(
                f"unknown backend {options.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        manifest = load_manifest(path, verify_hashes=options.verify_hashes)
        _check_backend(path, manifest.model_format, options)
        vocab = Vocabulary.load(manifest.path(manifest.vocab_file))
        if len(vocab) != manifest.vocab_size:
            raise BundleError(
                f"{manifest.path(manifest.vocab_file)}: vocabulary has {len(vocab)} words but the manifest says "
                f"{manifest.vocab_size}; the bundle is inconsistent, re-export it"
            )
        models = {
            role: _load_model(manifest.path(entry.file), manifest.model_format, options, role)
            for role, entry in manifest.models.items()
        }
        for role, model in models.items():
            entry = manifest.models[role]
            expected_in = sorted(t["name"] for t in entry.inputs)
            expected_out = sorted(t["name"] for t in entry.outputs)
            if (
                sorted(model.input_names) != expected_in
                or sorted(model.output_names) != expected_out
            ):
                raise BundleError(
                    f"{model.path}: tensors {sorted(model.input_names)} -> {sorted(model.output_names)} do not match "
                    f"the manifest ({expected_in} -> {expected_out})"
                )
            _check_shapes(model, entry)
        return cls(manifest, vocab, models, options)

    def _pixels(self, image: str | os.PathLike | Image.Image | np.ndarray, bgr: bool) -> np.ndarray:
        """The encoder's input [1, S, S, 3] for a path, PIL image or array."""
        prep = self.manifest.preprocessing
        if isinstance(image, (str, os.PathLike)):
            return load_pixels(image, prep)[None]
        if isinstance(image, Image.Image):
            return preprocess(to_rgb(image), prep)[None]
        if isinstance(image, np.ndarray):
            if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
                raise ImageError(f"image array must hold numbers, got dtype {image.dtype}")
            if image.ndim == 2:
                gray = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
                return preprocess(gray.convert("RGB"), prep)[None]
            if image.ndim != 3 or image.shape[2] not in (3, 4):
                raise ImageError(
                    f"image array must be [H, W], [H, W, 3] or [H, W, 4], got {image.shape}"
                )
            # A uint8 frame is wrapped as it is (no copy, no channel swap at full size):
            # preprocess swaps BGR after the resize.
            array = np.asarray(image[..., :3], dtype=np.uint8)  # [H, W, 3]
            return preprocess(Image.fromarray(array), prep, bgr=bgr)[None]  # [1, S, S, 3]
        raise ImageError(
            f"cannot caption an object of type {type(image).__name__}; pass a path, PIL image or array"
        )

    def encode(
        self, image: str | os.PathLike | Image.Image | np.ndarray, bgr: bool = False
    ) -> np.ndarray:
        """Features [1, F] of one image: preprocessing and the encoder, no decoding."""
        if self._closed:
            raise RuntimeError("this Captioner is closed")
        return self.models["encoder"](image=self._pixels(image, bgr))["features"]  # [1, F]

    def caption(
        self, image: str | os.PathLike | Image.Image | np.ndarray, bgr: bool = False
    ) -> CaptionResult:
        """Caption one image: a file path, a PIL image, or a uint8 array (RGB, or BGR with bgr=True)."""
        if self._closed:
            raise RuntimeError("this Captioner is closed")
        t0 = time.perf_counter()
        pixels = self._pixels(image, bgr)  # [1, S, S, 3]
        t1 = time.perf_counter()
        features = self.models["encoder"](image=pixels)["features"]  # [1, F]
        t2 = time.perf_counter()
        max_length = self.options.max_length or self.manifest.max_length
        start_id, end_id = self.manifest.start_id, self.manifest.end_id
        if self.options.beam_width > 1:
            decoded: Decoded = beam_search(
                self._step_model,
                features,
                start_id,
                end_id,
                max_length,
                self.options.beam_width,
                self.options.length_penalty,
            )[0]
        else:
            decoded = greedy_decode(self._step_model, features, start_id, end_id, max_length)[0]
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

    def caption_stream(
        self, images: Iterable[str | os.PathLike | Image.Image | np.ndarray], bgr: bool = False
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
        return {role: model.backend_name for role, model in self.models.items()}

    def close(self) -> None:
        self.models = {}
        self._closed = True

    def __enter__(self) -> Captioner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_shapes(model: BackendModel, entry) -> None:
    """Refuse a model file whose tensor shapes are not the manifest's (-1 matches any size)."""
    file_inputs, file_outputs = model.tensor_shapes()
    for kind, declared, actual in (
        ("input", entry.inputs, file_inputs),
        ("output", entry.outputs, file_outputs),
    ):
        for tensor in declared:
            want, got = list(tensor["shape"]), actual[tensor["name"]]
            fits = len(want) == len(got) and all(
                w == g or -1 in (w, g) for w, g in zip(want, got, strict=True)
            )
            if not fits:
                raise BundleError(
                    f"{model.path}: {kind} '{tensor['name']}' has shape {got} in the file, but the "
                    f"manifest says {want}; the bundle is inconsistent, re-export it"
                )


def _check_backend(path: str | os.PathLike, model_format: str, options: CaptionerOptions) -> None:
    """Refuse a backend that cannot run this bundle's format, saying what would."""
    wanted = BACKEND_FORMATS.get(options.backend, model_format)
    if wanted != model_format:
        fits = " or ".join(repr(b) for b, f in BACKEND_FORMATS.items() if f == model_format)
        raise BackendError(
            f"{path}: backend {options.backend!r} runs {wanted} bundles, but this bundle's "
            f"model_format is {model_format!r}; use backend 'auto' or {fits}, or re-export "
            f"the run with caption-export --format {wanted}"
        )
    if options.accelerator not in ACCELERATORS:
        raise BackendError(
            f"unknown accelerator {options.accelerator!r}; choose one of {', '.join(ACCELERATORS)}"
        )
    if options.accelerator == "gpu" and options.providers:
        raise BackendError(
            "choose either an accelerator or a list of providers, not both: accelerator 'gpu' "
            "picks the onnxruntime provider itself"
        )
    if options.accelerator == "gpu" and options.backend == "tflite-runtime":
        raise BackendError(
            "backend 'tflite-runtime' has no GPU path; use backend 'litert' (ai-edge-litert) "
            "with accelerator 'gpu'"
        )
    if options.providers and model_format != "onnx":
        raise BackendError(
            f"{path}: execution providers ({', '.join(options.providers)}) apply to onnxruntime "
            f"only, and this is a {model_format} bundle; leave providers unset"
        )


def _load_model(
    path: Path, model_format: str, options: CaptionerOptions, role: str
) -> BackendModel:
    on_accelerator = options.accelerator == "gpu" and (
        role == "encoder" or options.accelerate_decoder
    )
    if model_format == "onnx":
        providers = onnx_accelerator_providers() if on_accelerator else options.providers
        return OnnxModel(path, providers=providers, num_threads=options.num_threads)
    if on_accelerator:
        return LiteRtCompiledModel(path, accelerator="gpu", show_logs=options.show_backend_logs)
    backend = {"tflite-runtime": "tflite_runtime"}.get(options.backend, options.backend)
    return TFLiteModel(
        path,
        backend=backend,
        num_threads=options.num_threads or usable_cores(),
        show_logs=options.show_backend_logs,
    )


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def bundle_bytes(path: str | os.PathLike) -> int:
    """Total size of a bundle's files."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
