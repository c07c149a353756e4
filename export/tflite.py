"""Keras run -> TFLite models with builtin ops only.

Each model is saved as a SavedModel with one 'serving_default' signature first, because
only that path gives the .tflite file named signature inputs and outputs, which the
runtime addresses by the names in the manifest.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterable

import numpy as np

# Per-file precisions (export/formats.py) this converter understands. A decoder is never
# full-integer: that would quantize the recurrent state (formats.py gives them "dynamic").
PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
DECODER_PRECISIONS = ("fp32", "fp16", "dynamic")


class UnsupportedOpsError(RuntimeError):
    """A converted model needs ops that edge runtimes (LiteRT, tflite_runtime) cannot run."""


def _convert(function, signature_function, quantize: Callable | None) -> bytes:
    import tensorflow as tf

    holder = tf.Module()
    holder.fn = function
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(holder, saved, signatures={"serving_default": signature_function})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            quantize(converter)
        return converter.convert()


def _weights_only(precision: str) -> Callable | None:
    """The converter settings of the weight-only recipes (fp16, dynamic-range int8)."""
    import tensorflow as tf

    if precision == "fp16":

        def quantize(converter):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]

        return quantize
    if precision == "dynamic":

        def quantize(converter):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            # Per-channel dense weights need FULLY_CONNECTED version 12, which tflite-runtime
            # 2.14 (the last release, the Raspberry Pi legacy backend) cannot load. Per-tensor
            # scales keep every bundle loadable by both runtimes.
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True

        return quantize
    return None


def _check_precision(precision: str, what: str, allowed: tuple[str, ...] = PRECISIONS) -> None:
    if precision not in allowed:
        raise ValueError(f"unknown TFLite {what} precision {precision!r}; choose one of {allowed}")


def op_names(model: bytes) -> list[str]:
    """Operator names used by a .tflite flatbuffer; custom ops (Flex included) keep their name."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    parsed = schema.Model.GetRootAsModel(model, 0)
    ops = []
    for i in range(parsed.OperatorCodesLength()):
        code = parsed.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if names.get(builtin) == "CUSTOM":
            ops.append((code.CustomCode() or b"?").decode())
        else:
            ops.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(set(ops))


def checked_ops(model: bytes, what: str) -> list[str]:
    """The file's sorted op names, refusing any an edge runtime cannot run (Flex, custom)."""
    ops = op_names(model)
    foreign = [op for op in ops if op.startswith("Flex") or not op.isupper()]
    if foreign:
        raise UnsupportedOpsError(f"{what}: uses ops that edge runtimes cannot run: {foreign}")
    return ops


def file_details(model: bytes) -> dict[str, str]:
    """What the manifest records of a TFLite file beyond its tensors and ops."""
    return {"gpu_compatibility": gpu_compatibility(model)}


def tensor_specs(model: bytes, names: dict[str, list[str]]) -> tuple[list[dict], list[dict]]:
    """Manifest inputs/outputs (name, shape, dtype, int8 scale and zero point) in the
    manifest's order, read by the interpreter a device will use."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner("serving_default")

    def describe(details: dict, order: list[str]) -> list[dict]:
        out = []
        for name in order:
            d = details[name]
            spec = {
                "name": name,
                "shape": [int(v) for v in d["shape_signature"]],
                "dtype": np.dtype(d["dtype"]).name,
            }
            scale, zero_point = d["quantization"]
            if scale:
                spec["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
            out.append(spec)
        return out

    return (
        describe(runner.get_input_details(), names["inputs"]),
        describe(runner.get_output_details(), names["outputs"]),
    )


def gpu_compatibility(model: bytes) -> str:
    """The LiteRT model analyzer's GPU-delegate verdict, first line."""
    import tensorflow as tf

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_content=model, gpu_compatibility=True)
    lines = [ln.strip() for ln in out.getvalue().splitlines() if "GPU" in ln and ln.strip()]
    return lines[0] if lines else "unknown"


def convert_encoder(
    encoder, input_size: int, precision: str, calibration: Iterable[np.ndarray] | None = None
) -> bytes:
    """Encoder image [1, S, S, 3] -> features [1, F]. int8: full-integer, int8 input and output;
    fp16 / dynamic: float16 / int8 weights, float input and output."""
    import keras
    import tensorflow as tf

    _check_precision(precision, "encoder")
    quantize = _weights_only(precision)
    if precision == "int8":
        if calibration is None:
            raise ValueError("full-integer encoder quantization needs calibration images")
        samples = list(calibration)

        def quantize(converter):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [s[None].astype(np.float32)] for s in samples
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    # Keras' own export tracks a Keras 3 model's variables, which a bare tf.Module does not.
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {"features": encoder(image, training=False)},
        input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="image")],
    )
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            quantize(converter)
        return converter.convert()


def convert_decoder_function(function, what: str, precision: str) -> bytes:
    """decoder_init / decoder_step. dynamic: int8 weights, float math, which keeps the
    recurrent state (and so the caption) close to the float model."""
    _check_precision(precision, f"{what} decoder", DECODER_PRECISIONS)
    return _convert(function, function.get_concrete_function(), _weights_only(precision))
