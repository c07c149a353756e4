"""Caption a list of images to JSONL, one line per image, with the installed runtime.

    python -I tests/platforms/caption_images.py --base ../shared --list images.txt \\
        --bundle BUNDLE --out captions.jsonl

Each line is {"image": the path as listed, "caption", "tokens", "score"}: the listed paths
are relative to --base, so that two machines whose images lie in different folders write
comparable files (tests/platforms/compare_captions.py). Without --bundle the package's
built-in model captions. Beside OUT, OUT's stem + ".meta.json" records what ran: the
Python, the machine, the backends and the versions of numpy and the backend modules.

It imports edgecap and the standard library only, so it runs in a device environment (no
TensorFlow, no checkout): run it with `python -I` there so that the installed package is
the one imported.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import sys
from pathlib import Path

VERSIONS = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "opencv-python-headless",
            "pillow", "edge-caption")  # fmt: skip


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def open_captioner(bundle: Path | None):
    from edgecap.edge_runtime.captioner import Captioner

    if bundle is not None:
        return Captioner.open(bundle)
    try:
        return Captioner.open()  # the built-in model
    except TypeError as error:  # an edge-caption without one: open() needs a path
        raise SystemExit(
            f"caption_images.py: no --bundle given and this edge-caption has no built-in "
            f"model ({error}); pass --bundle FOLDER"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the listed paths' folder")
    parser.add_argument("--list", type=Path, required=True, help="image paths, one a line")
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: the built-in model)")
    parser.add_argument("--out", type=Path, required=True, help="JSONL to write")
    args = parser.parse_args(argv)

    images = [line.strip() for line in args.list.read_text().splitlines() if line.strip()]
    if not images:
        raise SystemExit(f"caption_images.py: {args.list} lists no image")
    missing = [i for i in images if not (args.base / i).is_file()]
    if missing:
        raise SystemExit(
            f"caption_images.py: {len(missing)} listed images are not under {args.base}, "
            f"e.g. {missing[0]}"
        )
    import edgecap.edge_runtime as runtime

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open_captioner(args.bundle) as captioner, args.out.open("w") as out:
        backends = captioner.backends
        # 'xnnpack' or 'none' per TFLite model (an edge-caption before delegates: absent)
        delegates = getattr(captioner, "delegates", None)
        for image in images:
            result = captioner.caption(args.base / image)
            line = {"image": image, "caption": result.text, "tokens": result.tokens,
                    "score": round(float(result.score), 6)}  # fmt: skip
            out.write(json.dumps(line) + "\n")
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "backends": backends,
        "delegates": delegates,
        "versions": versions(),
        "edgecap_file": runtime.__file__,
        "bundle": str(args.bundle) if args.bundle else "built-in",
        "images": len(images),
    }
    args.out.with_name(args.out.stem + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{args.out}: {len(images)} captions ({', '.join(sorted(set(backends.values())))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
