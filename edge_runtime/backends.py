"""Inference backends behind one small interface: named inputs in, named outputs out.

LiteRT (`ai_edge_litert`) is the default. `tflite_runtime` is accepted as a fallback for
older Raspberry Pi OS images and says so when it loads. Quantized inputs and outputs are
converted here with the tensor's own scale and zero point, so callers always see float32.
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


class TFLiteModel:
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

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def input_details(self, name: str) -> dict:
        return self._inputs[name]

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
