"""`Bundle`: a bundle directory opened on the device, with every load-time check done.

Opening checks the manifest (format version, hashes, paths), the vocabulary, each file's
tensor names and shapes, and that the chosen backend can run the format; what comes out
is the encoder and the decoder's step model, ready for `Captioner` (or any tool that
decodes with its own settings). Nothing outside edge_runtime holds backend model objects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .backends import (
    LiteRtCompiledModel,
    OnnxModel,
    TFLiteModel,
    no_xnnpack_warning,
    onnx_accelerator_providers,
)
from .builtin import resolve_bundle
from .decoding import StepModel, TwoWayModel
from .errors import BackendError, BundleError
from .manifest import Manifest, ModelEntry, load_manifest
from .step_models import BACKWARD_ROLES, make_step_model
from .vocab import Vocabulary

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    import argparse

# Backend models, one per role; all of them take and return named float32 numpy arrays,
# which is what step_models' init_fn / step_fn expect.
BackendModel = TFLiteModel | LiteRtCompiledModel | OnnxModel

# Which model format each explicit backend runs.
BACKEND_FORMATS = {"litert": "tflite", "tflite-runtime": "tflite", "onnx": "onnx"}
BACKENDS = ("auto", *BACKEND_FORMATS)
ACCELERATORS = ("cpu", "gpu")


# The --threads help of every command that opens bundles (edge_caption, caption-bench):
# what RuntimeOptions.num_threads=None means per backend.
THREADS_HELP = (
    "CPU threads per model (default: TFLite every core this process may use; ONNX "
    "onnxruntime's own default, one thread per physical core)"
)


@dataclass(frozen=True)
class RuntimeOptions:
    """How a bundle runs: backend, threads, accelerator. How to decode is DecodeOptions."""

    backend: str = "auto"
    """'auto' follows the bundle's model_format (TFLite: ai_edge_litert, else tflite_runtime;
    ONNX: onnxruntime). 'litert' and 'tflite-runtime' need a TFLite bundle, 'onnx' an ONNX
    one: naming a backend is a promise about what runs, so a mismatch is an error, not a
    silent switch."""

    providers: Sequence[str] | None = None
    """onnxruntime execution providers, in order of preference (e.g. ('CUDAExecutionProvider',
    'CPUExecutionProvider')); None runs on the CPU. ONNX bundles only: a TFLite backend has
    no providers, so setting them for one is an error rather than ignored."""

    num_threads: int | None = None
    """CPU threads per model; None uses every core this process may run on (LiteRT's own
    default leaves cores idle and was measurably slower: docs/benchmarks.md, "Figures
    behind the runtime's choices"). TFLite runs its CPU kernels through XNNPACK, which LiteRT
    applies by default; onnxruntime's default is already one thread per physical core."""

    accelerator: str = "cpu"
    """'cpu', or 'gpu': LiteRT's GPU accelerator for TFLite bundles, or the first GPU
    provider onnxruntime has (CUDA, ROCm, OpenVINO, CoreML, DirectML; TensorRT only
    through `providers`) for ONNX ones. Without one, loading fails and says what was
    tried; it never falls back to the CPU quietly."""

    accelerate_decoder: bool = False
    """With accelerator 'gpu', also put the decoder on it. Off by default: a step is a few
    small matrix products, once per word, where launches and host-device copies weigh as
    much as the arithmetic; the encoder is where a GPU pays. On an H200 it paid for the
    fp32 ONNX bundle, not for the int8 one, and LiteRT's GPU delegate cannot run the LSTM
    step at all (docs/benchmarks.md, "NVIDIA GPU (H200)")."""

    xnnpack: bool = True
    """TFLite models on the CPU run through XNNPACK, the interpreter's default delegate.
    False runs them on the interpreter's built-in kernels alone
    (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), to compare captions or speed. A
    bundle that runs without XNNPACK, asked or not (a container hiding /sys, an old
    tflite_runtime with an int8 model), logs one warning saying so and why."""

    show_backend_logs: bool = False
    """Let LiteRT's own log lines (e.g. "Created TensorFlow Lite XNNPACK delegate for
    CPU.") through to stderr as the models load and are freed. Off by default, so they do
    not interleave with the captions; when a model fails to load, its warnings and errors
    come through anyway."""

    verify_hashes: bool = True
    """Check every file's SHA-256 against the manifest before loading it."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, show_backend_logs: bool = False) -> RuntimeOptions:
        """The options of add_runtime_options' flags; ValueError names a flag that is wrong."""
        if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
            raise ValueError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")
        if args.accelerate_decoder and args.accelerator != "gpu":
            # Without a GPU encoder there is nothing to put the decoder beside: say so rather
            # than run on the CPU as if the flag had been heard.
            raise ValueError("--accelerate-decoder needs --accelerator gpu")
        providers = None
        if args.providers is not None:
            providers = [p.strip() for p in args.providers.split(",") if p.strip()]
            if not providers:
                raise ValueError("--providers needs at least one provider name")
        return cls(backend=args.backend, providers=providers, num_threads=args.threads,
                   accelerator=args.accelerator, accelerate_decoder=args.accelerate_decoder,
                   xnnpack=args.xnnpack, show_backend_logs=show_backend_logs)  # fmt: skip

    def to_argv(self) -> list[str]:
        """The flags of add_runtime_options that give these options (for a child process)."""
        argv = ["--backend", self.backend, "--accelerator", self.accelerator]
        argv += ["--accelerate-decoder"] if self.accelerate_decoder else []
        argv += ["--threads", str(self.num_threads)] if self.num_threads else []
        argv += [] if self.xnnpack else ["--no-xnnpack"]
        return argv + (["--providers", ",".join(self.providers)] if self.providers else [])


MAX_THREADS = 1024  # far above any device's cores; more would only exhaust the OS's threads


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """The flags of RuntimeOptions (RuntimeOptions.from_args reads them back), declared once
    for every command that opens bundles: edge_caption and caption-bench."""
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto follows the bundle's format: TFLite runs on ai_edge_litert, else "
        "tflite_runtime; ONNX on onnxruntime (default auto)",
    )
    parser.add_argument(
        "--providers",
        default=None,
        help="ONNX bundles: onnxruntime execution providers in order of preference, "
        "comma-separated, e.g. CUDAExecutionProvider,CPUExecutionProvider (default: CPU)",
    )
    parser.add_argument(
        "--accelerator",
        default="cpu",
        choices=ACCELERATORS,
        help="gpu runs the encoder on LiteRT's GPU accelerator (TFLite) or an onnxruntime "
        "GPU provider (ONNX), and fails if there is none; the decoder stays on the CPU "
        "(default cpu)",
    )
    parser.add_argument(
        "--accelerate-decoder",
        action="store_true",
        help="with --accelerator gpu, put the decoder step on the GPU too (ONNX only: "
        "LiteRT's GPU delegate cannot run the step; faster or slower by bundle, see "
        "docs/benchmarks.md)",
    )
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument(
        "--no-xnnpack",
        dest="xnnpack",
        action="store_false",
        help="TFLite: run on the interpreter's built-in kernels, without the XNNPACK delegate "
        "(slower; to compare captions or speed). Any run without it warns once",
    )


class Bundle:
    """An opened bundle: `Bundle.open(path, RuntimeOptions())`; close() or `with`."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        vocab: Vocabulary,
        models: dict[str, BackendModel],
        options: RuntimeOptions,
    ):
        self.path, self.manifest, self.vocab, self.options = path, manifest, vocab, options
        self._models = models
        # The same state bookkeeping as a Keras run's evaluation, over this bundle's backend
        # models (TFLite or ONNX alike): greedy_decode and beam_search never see the format.
        backward = [models[BACKWARD_ROLES[r]] for r in ("decoder_init", "decoder_step")
                    if BACKWARD_ROLES[r] in models]  # fmt: skip
        self.step_model: StepModel | TwoWayModel = make_step_model(
            manifest.decoder_kind,
            models["decoder_init"],
            models["decoder_step"],
            manifest.prefix_length,
            tuple(backward) if backward else None,  # twoway: the right-to-left pair
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike | None = None, options: RuntimeOptions | None = None
    ) -> Bundle:
        """Open a bundle folder, or a built-in model by name (`edge_caption models`); None
        opens the default built-in model."""
        options = options or RuntimeOptions()
        path = resolve_bundle(path)
        check_backend(path, None, options)
        manifest = load_manifest(path, verify_hashes=options.verify_hashes)
        check_backend(path, manifest.model_format, options)
        vocab = Vocabulary.load(manifest.path(manifest.vocab_file))
        if len(vocab) != manifest.vocab_size:
            raise BundleError(
                f"{manifest.path(manifest.vocab_file)}: vocabulary has {len(vocab)} words but the manifest says "
                f"{manifest.vocab_size}; the bundle is inconsistent, re-export it"
            )
        models: dict[str, BackendModel] = {}
        try:
            for role, entry in manifest.models.items():
                models[role] = _load_model(
                    manifest.path(entry.file), manifest.model_format, options, role
                )
                _check_tensors(models[role], entry)
        except Exception:
            _close_models(models)  # the ones already loaded, before the error is reported
            raise
        warning = no_xnnpack_warning(
            {role: m for role, m in models.items() if isinstance(m, TFLiteModel)}
        )
        if warning:
            log.warning("%s", warning)
        return cls(Path(path), manifest, vocab, models, options)

    def run_model(self, role: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """One file's raw outputs by tensor name, e.g. run_model('decoder_init',
        features=f) -> {'h0': ..., 'c0': ...}: what export parity compares tensor by tensor."""
        if not self._models:
            raise RuntimeError(f"{self.path}: this bundle is closed")
        return self._models[role](**inputs)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The encoder alone: preprocessed pixels [1, S, S, 3] -> features [1, F]."""
        return self.run_model("encoder", image=pixels)["features"]  # [1, F]

    @property
    def backends(self) -> dict[str, str]:
        """What runs each model, e.g. {'encoder': 'ai_edge_litert', ...}."""
        return {role: model.backend_name for role, model in self._models.items()}

    @property
    def delegates(self) -> dict[str, str | None]:
        """What runs each TFLite model on its device: 'xnnpack' (the fast CPU path), 'none'
        (the interpreter's built-in kernels), 'gpu' (LiteRT's GPU accelerator); None for
        ONNX files, whose providers say it."""
        return {role: model.delegate for role, model in self._models.items()}

    @property
    def providers(self) -> dict[str, list[str]]:
        """onnxruntime's execution providers per model, in use order ([] for TFLite files)."""
        return {
            role: list(model.providers) if isinstance(model, OnnxModel) else []
            for role, model in self._models.items()
        }

    def close(self) -> None:
        _close_models(self._models)
        self._models = {}

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_models(models: dict[str, BackendModel]) -> None:
    for model in models.values():
        if isinstance(model, LiteRtCompiledModel):
            model.close()  # now, while its log lines can still be kept quiet


def _check_tensors(model: BackendModel, entry: ModelEntry) -> None:
    """Refuse a model file whose tensor names or shapes are not the manifest's (-1 matches
    any size)."""
    expected_in = sorted(t["name"] for t in entry.inputs)
    expected_out = sorted(t["name"] for t in entry.outputs)
    if sorted(model.input_names) != expected_in or sorted(model.output_names) != expected_out:
        raise BundleError(
            f"{model.path}: tensors {sorted(model.input_names)} -> {sorted(model.output_names)} do not match "
            f"the manifest ({expected_in} -> {expected_out})"
        )
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


def check_backend(
    path: str | os.PathLike, model_format: str | None, options: RuntimeOptions
) -> None:
    """Refuse options no bundle could run with, and (given the bundle's model_format) a
    backend that cannot run this one, saying what would."""
    if options.backend not in BACKENDS:
        raise BackendError(
            f"unknown backend {options.backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if options.accelerator not in ACCELERATORS:
        raise BackendError(
            f"unknown accelerator {options.accelerator!r}; choose one of {', '.join(ACCELERATORS)}"
        )
    if model_format is None:
        return
    wanted = BACKEND_FORMATS.get(options.backend, model_format)
    if wanted != model_format:
        fits = " or ".join(repr(b) for b, f in BACKEND_FORMATS.items() if f == model_format)
        raise BackendError(
            f"{path}: backend {options.backend!r} runs {wanted} bundles, but this bundle's "
            f"model_format is {model_format!r}; use backend 'auto' or {fits}, or re-export "
            f"the run with caption-export --format {wanted}"
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


def _load_model(path: Path, model_format: str, options: RuntimeOptions, role: str) -> BackendModel:
    on_accelerator = options.accelerator == "gpu" and (
        role == "encoder" or options.accelerate_decoder
    )
    if model_format == "onnx":
        providers = onnx_accelerator_providers() if on_accelerator else options.providers
        providers = list(providers) if providers else None
        return OnnxModel(
            path, providers=providers, num_threads=options.num_threads, spin=role == "decoder_step"
        )
    if on_accelerator:
        return LiteRtCompiledModel(path, accelerator="gpu", show_logs=options.show_backend_logs)
    backend = {"tflite-runtime": "tflite_runtime"}.get(options.backend, options.backend)
    return TFLiteModel(
        path,
        backend=backend,
        num_threads=options.num_threads or usable_cores(),
        show_logs=options.show_backend_logs,
        default_delegates=options.xnnpack,
    )


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def bundle_bytes(path: str | os.PathLike) -> int:
    """Total size of a bundle's files."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
