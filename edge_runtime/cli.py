"""`edge_caption`: caption images, folders, videos and cameras with a bundle. No TensorFlow."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import closing

from .errors import EdgeCaptionError, ImageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge_caption", description="Caption images, videos or a camera with a bundle."
    )
    parser.add_argument("--model", required=True, help="bundle folder written by caption-export")
    parser.add_argument(
        "--source",
        required=True,
        help="image file, folder of images, video file, or camera index (0)",
    )
    parser.add_argument(
        "--jsonl", action="store_true", help="print JSON lines: source, caption, ms"
    )
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="caption every N-th frame of a video or camera (default 1)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "litert", "tflite-runtime", "onnx"],
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
        "--threads",
        type=int,
        default=None,
        help="CPU threads per model (default: backend's choice)",
    )
    parser.add_argument(
        "--beam", type=int, default=1, help="beam width; 1 decodes greedily (default 1)"
    )
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.every < 1:
        parser.error("--every must be at least 1")
    providers = None
    if args.providers is not None:
        providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        if not providers:
            parser.error("--providers needs at least one provider name")
    logging.basicConfig(level=logging.WARNING, format="edge_caption: %(message)s")

    from .captioner import Captioner, CaptionerOptions
    from .sources import iter_frames

    failures = 0
    try:
        with Captioner.from_bundle(
            args.model,
            CaptionerOptions(
                backend=args.backend,
                providers=providers,
                num_threads=args.threads,
                beam_width=args.beam,
            ),
        ) as captioner:
            # closing(): a camera is released even when Ctrl-C stops the loop mid-frame.
            with closing(iter_frames(args.source, every=args.every)) as frames:
                for frame in frames:
                    try:
                        result = captioner.caption(frame.image, bgr=frame.bgr)
                    except ImageError as exc:
                        failures += 1
                        print(f"edge_caption: skipped: {exc}", file=sys.stderr)
                        continue
                    if args.jsonl:
                        print(
                            json.dumps(
                                {
                                    "source": frame.source,
                                    "caption": result.text,
                                    "ms": round(result.timings_ms["total"], 2),
                                }
                            )
                        )
                    else:
                        print(f"{frame.source}\t{result.text}")
                    sys.stdout.flush()
    except EdgeCaptionError as exc:
        print(f"edge_caption: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if failures:
        print(f"edge_caption: {failures} input(s) could not be captioned", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
