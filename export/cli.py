"""`caption-export`: a trained run -> a TFLite or ONNX bundle for the device."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from edgecap.edge_runtime.errors import EdgeCaptionError

# Precisions per --format, default first. Kept here (not imported from .bundle) so that
# --help answers without importing TensorFlow; tests/test_onnx.py checks they agree.
QUANTIZE: dict[str, tuple[str, ...]] = {"tflite": ("int8", "fp32"), "onnx": ("fp32", "dynamic")}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="caption-export", description="Export a trained run to a bundle."
    )
    parser.add_argument("run", help="run directory written by caption-train")
    parser.add_argument(
        "--format",
        default="tflite",
        choices=["tflite", "onnx"],
        help="model format: tflite (LiteRT) or onnx (onnxruntime) (default tflite)",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        choices=sorted({p for precisions in QUANTIZE.values() for p in precisions}),
        help="tflite: int8 (full-integer encoder + dynamic-range decoders, the default) or "
        "fp32; onnx: fp32 (the default) or dynamic (int8 weights, activations quantized "
        "per call, onnxruntime.quantization)",
    )
    parser.add_argument(
        "--out", required=True, help="bundle folder to write (replaced atomically if it exists)"
    )
    parser.add_argument(
        "--parity-images",
        type=int,
        default=100,
        help="test images for the parity check (default 100)",
    )
    args = parser.parse_args(argv)
    quantize = args.quantize or QUANTIZE[args.format][0]
    if quantize not in QUANTIZE[args.format]:
        parser.error(
            f"--quantize {quantize} is not available for --format {args.format}; "
            f"choose one of {', '.join(QUANTIZE[args.format])}"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .bundle import export_bundle, summarize
    from .onnx import OnnxExportError
    from .tflite import UnsupportedOpsError

    start = time.perf_counter()
    try:
        manifest = export_bundle(
            args.run, args.out, quantize, args.parity_images, model_format=args.format
        )
    except (
        EdgeCaptionError,
        UnsupportedOpsError,
        OnnxExportError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f"caption-export: error: {exc}", file=sys.stderr)
        return 2
    print(summarize(manifest))
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
