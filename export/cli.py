"""`caption-export`: a trained run -> a TFLite bundle for the device."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from edgecap.edge_runtime.errors import EdgeCaptionError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="caption-export", description="Export a trained run to a bundle."
    )
    parser.add_argument("run", help="run directory written by caption-train")
    parser.add_argument(
        "--format", default="tflite", choices=["tflite"], help="model format (default tflite)"
    )
    parser.add_argument(
        "--quantize",
        default="int8",
        choices=["fp32", "int8"],
        help="fp32, or int8: full-integer encoder + dynamic-range decoder (default int8)",
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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .bundle import export_bundle, summarize
    from .tflite import UnsupportedOpsError

    start = time.perf_counter()
    try:
        manifest = export_bundle(args.run, args.out, args.quantize, args.parity_images)
    except (EdgeCaptionError, UnsupportedOpsError, FileNotFoundError, ValueError) as exc:
        print(f"caption-export: error: {exc}", file=sys.stderr)
        return 2
    print(summarize(manifest))
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
