"""Keras run -> ONNX models that a plain onnxruntime CPU session runs.

Each model is a tf.function with an input signature (the encoder wrapped the way
export/tflite.py wraps it; decoder_init and decoder_step straight from the step functions).
The ONNX graph's inputs and outputs are named as the TensorSpecs and the returned dict
keys name them, which are the manifest's names (edge_runtime.manifest.tensor_names).

Why not `tf2onnx.convert.from_function` as is: it lists every captured tensor of the
concrete function as a graph input. The step functions hold their weights as eager
`tf.constant`s, so the decoder files came out with their weights as *inputs without
initializers* (a session would ask the caller to feed the embedding table). We freeze
the concrete function with tf2onnx's own loader, pass only the signature's inputs, and
then convert the frozen GraphDef; Keras 3 variables (the encoder) freeze the same way.

tf2onnx converts with `continue_on_error=True`, so an op it cannot map is left in the
graph instead of failing; `check_model` (onnx.checker plus an onnxruntime CPU session)
is what turns that into an error at export time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

import numpy as np

PRECISIONS = ("fp32", "dynamic", "int8")
DECODER_PRECISIONS = ("fp32", "dynamic")  # never static int8: it would clip the recurrent state
OPSET = 17  # ONNX Runtime >= 1.14 runs it; tf2onnx 1.17 supports up to 18
BATCH_DIM = "batch"  # the symbolic name of a dynamic first dimension


class OnnxExportError(RuntimeError):
    """A converted model is not valid ONNX, or does not load in onnxruntime's CPU provider."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the converters' advice (TF1 freezing deprecations from tf2onnx's loader,
    onnxruntime.quantization's "consider pre-processing") that a user cannot act on."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _convert(function, what: str) -> bytes:
    """A tf.function with an input signature -> serialized ONNX ModelProto (fp32)."""
    import tensorflow as tf
    from tf2onnx import tf_loader
    from tf2onnx.convert import from_graph_def

    concrete = function.get_concrete_function()
    specs = list(tf.nest.flatten(concrete.structured_input_signature))
    # Captured tensors (weights, Keras variables) come after the signature's inputs.
    input_names = [t.name for t in concrete.inputs[: len(specs)]]
    output_names = [t.name for t in concrete.outputs]
    outputs = concrete.structured_outputs
    if not isinstance(outputs, dict):
        raise OnnxExportError(f"{what}: the function must return a dict of named outputs")
    # tf.nest flattens a dict in sorted-key order, which is the order of concrete.outputs.
    keys = tf.nest.flatten({k: k for k in outputs})
    rename = dict(zip(input_names, [s.name for s in specs], strict=True))
    rename.update(zip(output_names, keys, strict=True))
    with tf.device("/cpu:0"), _quiet():
        graph_def = tf_loader.from_function(concrete, input_names, output_names)
        proto, _ = from_graph_def(
            graph_def,
            name=what.split(".")[0],
            input_names=input_names,
            output_names=output_names,
            opset=OPSET,
            tensors_to_rename=rename,
        )
    _tidy(proto, [s.name for s in specs], list(outputs))
    return proto.SerializeToString()


def _tidy(proto, input_order: list[str], output_order: list[str]) -> None:
    """Outputs in the function's (= manifest's) order, and one name for the batch dimension.

    tf2onnx lists outputs in sorted order and names every unknown dimension `unk__N`;
    a reader of the file (or Netron) should see `log_probs, h_next, c_next` over `batch`.
    """
    graph = proto.graph
    by_name = {o.name: o for o in graph.output}
    ordered = [by_name[name] for name in output_order]
    copies = [type(o)() for o in ordered]
    for copy, original in zip(copies, ordered, strict=True):
        copy.CopyFrom(original)
    del graph.output[:]
    graph.output.extend(copies)
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    if [i.name for i in graph.input] != input_order:
        raise OnnxExportError(
            f"{proto.graph.name}: ONNX inputs are {[i.name for i in graph.input]}, expected "
            f"{input_order}; a captured tensor leaked into the inputs"
        )


def _check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> None:
    if precision not in allowed:
        raise ValueError(f"unknown ONNX precision {precision!r}; choose one of {allowed}")


def convert_encoder(
    encoder, input_size: int, precision: str = "fp32", calibration: list[np.ndarray] | None = None
) -> bytes:
    """Encoder image [1, S, S, 3] -> features [1, F] (the same fixed batch as TFLite).

    int8 is static QDQ quantization calibrated on `calibration` (preprocessed training
    images); the model keeps float input and output, so the runtime feeds it unchanged.
    """
    import tensorflow as tf

    _check_precision(precision)

    @tf.function(
        input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="image")]
    )
    def encode(image):
        return {"features": encoder(image, training=False)}

    model = _convert(encode, "encoder.onnx")
    if precision == "int8":
        if not calibration:
            raise ValueError("static int8 encoder quantization needs calibration images")
        return quantize_static(model, calibration)
    return quantize_dynamic(model) if precision == "dynamic" else model


def convert_decoder_function(function, what: str, precision: str = "fp32") -> bytes:
    """decoder_init / decoder_step: the step functions' tf.function, dynamic batch."""
    _check_precision(precision, DECODER_PRECISIONS)
    model = _convert(function, what)
    return quantize_dynamic(model) if precision == "dynamic" else model


def quantize_dynamic(model: bytes) -> bytes:
    """Dynamic-range int8: QInt8 weights, activations quantized on the fly per call.

    Conv, MatMul and Gemm become ConvInteger / MatMulInteger with per-channel int8 weights
    (per-tensor lost 4 more identical captions in 100 on the demo data); the embedding
    Gather, the gates and log-softmax stay float. ConvInteger is slow in onnxruntime's CPU
    provider (several times the fp32 encoder's latency: docs/benchmarks.md), so this recipe
    buys size (a quarter of the bytes), not speed.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        with open(src, "wb") as f:
            f.write(model)
        with _quiet():
            ort_quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        with open(dst, "rb") as f:
            return f.read()


def first_conv(model: bytes) -> list[str]:
    """The name of the graph's first Conv (ONNX graphs are topologically sorted), if any."""
    import onnx

    convs = [n.name for n in onnx.load_from_string(model).graph.node if n.op_type == "Conv"]
    return convs[:1]


def fold_for_quantization(model: bytes) -> bytes:
    """The model after onnxruntime's basic graph optimizations, which are portable
    (constant folding, Conv + Mul / Add fusion; no hardware-specific layout).

    tf2onnx leaves the BatchNorm after each of MobileNetV2's 17 depthwise convolutions as
    a Mul and an Add. Quantized as they are, each gets its own Quantize/Dequantize pair,
    and onnxruntime ran that int8 encoder at three times the float one's time; folded
    into the Conv first, at about the same, with features closer to float (cosine 0.989
    against 0.977 on 100 photos; docs/flickr8k.md).
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "folded.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = path
        with _quiet():
            ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        with open(path, "rb") as f:
            return f.read()


def quantize_static(model: bytes, calibration: list[np.ndarray]) -> bytes:
    """Static int8 in QDQ form: per-channel int8 weights, uint8 activations with ranges
    calibrated (min-max) on preprocessed training images; the first Conv stays float.
    The float graph is folded first (fold_for_quantization).

    On the real Flickr8k MobileNetV2 encoder (100 dev photos against fp32), all-int8 QDQ
    gave features with cosine 0.941 and mean |diff| 0.195 (TFLite's int8 encoder: 0.989 /
    0.085); keeping the first Conv in float gave 0.977 / 0.125, while keeping the last Conv
    in float, the activations' type or calibration method changed nothing. Folded, 0.989
    / 0.084 either way; but onnxruntime's CPU graph fuses the residual Adds (QLinearAdd)
    and the convolutions around them only with uint8 activations, which is why they are
    uint8 (the timings: docs/flickr8k.md "Quantization on real features").
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(calibration)

        def get_next(self) -> dict | None:
            sample = next(self._samples, None)
            return None if sample is None else {"image": sample[None].astype(np.float32)}

    model = fold_for_quantization(model)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        with open(src, "wb") as f:
            f.write(model)
        with _quiet():
            ort_quantize_static(
                src,
                dst,
                Images(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=first_conv(model),
            )
        with open(dst, "rb") as f:
            return f.read()


def op_names(model: bytes) -> list[str]:
    """Sorted op types; ops outside the default ONNX domain keep their domain (com.microsoft.X)."""
    import onnx

    proto = onnx.load_from_string(model)
    return sorted(
        {
            n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            for n in proto.graph.node
        }
    )


def _describe(value) -> dict:
    from onnx.helper import tensor_dtype_to_np_dtype

    tensor = value.type.tensor_type
    return {
        "name": value.name,
        # -1 for a dynamic dimension, as the TFLite manifest's shape_signature does.
        "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim],
        "dtype": np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name,
    }


def tensor_specs(model: bytes, order: dict[str, list[str]]) -> tuple[list[dict], list[dict]]:
    """Manifest inputs/outputs (name, shape, dtype) in the manifest's order."""
    import onnx

    graph = onnx.load_from_string(model).graph
    result = []
    for kind, values in (("inputs", graph.input), ("outputs", graph.output)):
        by_name = {v.name: v for v in values}
        missing = [n for n in order[kind] if n not in by_name]
        if missing:
            raise OnnxExportError(
                f"{graph.name}: {kind} {missing} not found in the ONNX graph ({list(by_name)})"
            )
        result.append([_describe(by_name[n]) for n in order[kind]])
    return result[0], result[1]


def file_details(model: bytes) -> dict[str, int]:
    """What the manifest records of an ONNX file beyond its tensors and ops."""
    return {"opset": OPSET}


def checked_ops(model: bytes, what: str) -> list[str]:
    """The file's sorted op types, once it passes check_model."""
    check_model(model, what)
    return op_names(model)


def check_model(model: bytes, what: str) -> None:
    """onnx.checker, then a plain onnxruntime CPU session: what the device will do."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and onnxruntime raise their own, unrelated, classes
        raise OnnxExportError(f"{what}: not a valid ONNX model for onnxruntime ({exc})") from exc
