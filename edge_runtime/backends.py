"""Inference backends behind one small interface: named inputs in, named outputs out.

TFLite bundles: LiteRT (`ai_edge_litert`) is the default. `tflite_runtime` is accepted as
a fallback for older Raspberry Pi OS images and says so when it loads. Quantized inputs
and outputs are converted here with the tensor's own scale and zero point, so callers
always see float32.

ONNX bundles: onnxruntime, with a list of execution providers (CPU by default).

Every backend library is imported inside its class, so importing this module needs only
numpy, and a device installs just the backend its bundle format needs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import BackendError, BundleError

log = logging.getLogger(__name__)


def _load_interpreter_class(backend: str):
    if backend in ("litert", "auto"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter, "ai_edge_litert"
        except ImportError:
            if backend == "litert":
                raise BackendError(
                    "backend 'litert' needs the ai-edge-litert package: pip install 'edge-caption[edge]'"
                ) from None
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise BackendError(
            "no TFLite interpreter found: install ai-edge-litert (pip install 'edge-caption[edge]') "
            "or, on older Raspberry Pi OS, tflite-runtime"
        ) from None
    log.warning("ai_edge_litert is not installed; using the tflite_runtime fallback")
    return Interpreter, "tflite_runtime"


class _NamedModel:
    """What the Captioner checks against the manifest: the model's own tensor names."""

    _inputs: dict
    _outputs: dict | list

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)


class TFLiteModel(_NamedModel):
    """One .tflite file run through its 'serving_default' signature."""

    def __init__(self, path: str | Path, backend: str = "auto", num_threads: int | None = None):
        interpreter_class, self.backend_name = _load_interpreter_class(backend)
        self.path = Path(path)
        try:
            self._interpreter = interpreter_class(
                model_path=str(self.path), num_threads=num_threads
            )
            self._runner = self._interpreter.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"{self.path}: cannot load this TFLite model ({exc}); the file is corrupt or truncated"
            ) from None
        self._inputs = self._runner.get_input_details()
        self._outputs = self._runner.get_output_details()

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feed = {}
        for name, value in inputs.items():
            detail = self._inputs[name]
            dtype = detail["dtype"]
            scale, zero_point = detail["quantization"]
            if dtype in (np.int8, np.uint8) and scale:
                info = np.iinfo(dtype)
                value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
            feed[name] = np.asarray(value, dtype=dtype)
        raw = self._runner(**feed)
        out = {}
        for name, value in raw.items():
            scale, zero_point = self._outputs[name]["quantization"]
            if value.dtype in (np.int8, np.uint8) and scale:
                value = (value.astype(np.float32) - zero_point) * np.float32(scale)
            out[name] = value
        return out


def _load_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "backend 'onnx' needs the onnxruntime package: pip install '.[edge]' "
            "(or pip install onnxruntime)"
        ) from None
    return onnxruntime


# ONNX tensor types the bundle uses, as numpy dtypes (onnxruntime wants exact dtypes).
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


class OnnxModel(_NamedModel):
    """One .onnx file run in an onnxruntime InferenceSession; the same interface as TFLiteModel.

    onnxruntime is imported here, not at module import, so a LiteRT-only device never
    needs it. `providers` is onnxruntime's ordered preference list (default: CPU only, the
    one provider every onnxruntime build has); a provider this build lacks is an error
    rather than onnxruntime's silent fallback, so a benchmark never measures the wrong one.
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        num_threads: int | None = None,
    ):
        ort = _load_onnxruntime()
        self.path = Path(path)
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(
                f"{self.path.name}: onnxruntime {ort.__version__} on this machine has no "
                f"{', '.join(missing)}; choose providers among {', '.join(available)} "
                "(or install the onnxruntime build that ships the one you want)"
            )
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # errors only; warnings would go to the device's stderr
        # A caption runs three sessions one after another, each with its own intra-op thread
        # pool. Spinning threads of the idle sessions steal the cores of the busy one: on 2
        # cores that made p90 latency 10x the median (15.5 vs 1.7 ms); without it, 1.45 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime's own exception classes derive from Exception
            raise BundleError(
                f"{self.path}: cannot load this ONNX model ({exc}); the file is corrupt or "
                "truncated, or needs a newer onnxruntime"
            ) from None
        self.backend_name = f"onnxruntime {ort.__version__} ({self._session.get_providers()[0]})"
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses, in order."""
        return list(self._session.get_providers())

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feed = {}
        for name, value in inputs.items():
            dtype = _ONNX_DTYPES.get(self._inputs[name].type)
            feed[name] = np.asarray(value, dtype=dtype)
        values = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, values, strict=True))
