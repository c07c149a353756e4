"""`caption-data`: make and inspect datasets."""

from __future__ import annotations

import argparse
import logging
import sys

from edgecap.edge_runtime.errors import (
    EdgeCaptionError,
    interrupted,
    is_write_failure,
    write_failure_reason,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="caption-data", description="Make and inspect caption datasets."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a synthetic dataset in the Flickr8k layout")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--images", type=int, default=4000, help="number of images (default 4000)")
    synth.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives identical bytes"
    )
    synth.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    info = sub.add_parser(
        "info",
        help="summarize a dataset: a Flickr8k-layout folder, a Karpathy-split JSON file "
        "or a COCO folder",
    )
    info.add_argument(
        "data",
        help="a Flickr8k-layout folder, a Karpathy-split JSON file or a COCO folder "
        "(one with annotations/captions_*.json)",
    )
    info.add_argument("--annotations-only", action="store_true", help="do not require the images")
    subset = sub.add_parser(
        "subset", help="a smaller Flickr8k-layout dataset: the first N images of each split"
    )
    subset.add_argument("source", help="a dataset, in any layout `info` reads")
    subset.add_argument("out", help="output folder (images are symlinked, not copied)")
    for split, default in (("train", 600), ("dev", 100), ("test", 100)):
        subset.add_argument(
            f"--{split}", type=int, default=default, help=f"images (default {default})"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "synth":
            from .synthetic import generate

            counts = generate(args.out, args.images, seed=args.seed, image_size=args.size)
            print(
                f"wrote {args.out}: {counts['images']} images (train {counts['train']}, dev {counts['dev']}, test {counts['test']})"
            )
        elif args.command == "subset":
            from edgecap.edge_runtime.evaluation.datasets import write_subset

            ds = write_subset(
                args.source, args.out, {"train": args.train, "dev": args.dev, "test": args.test}
            )
            print(f"wrote {args.out}: " + ", ".join(f"{s} {len(i)}" for s, i in ds.splits.items()))
        else:
            from edgecap.edge_runtime.evaluation.datasets import load_dataset

            ds = load_dataset(args.data, require_images=not args.annotations_only)
            for split, ids in ds.splits.items():
                print(
                    f"{split}: {len(ids)} images, {sum(len(ds.captions[i]) for i in ids)} captions"
                )
            for note in ds.notes:
                print(f"note: {note}")
    except EdgeCaptionError as exc:
        print(f"caption-data: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.command == "info" or not is_write_failure(exc):
            raise
        # Every file is written atomically: those already there are whole, none is half.
        what, fix = write_failure_reason(exc)
        print(
            f"caption-data: error: {args.out}: {what} ({exc.strerror}); the files "
            f"already written are whole. {fix}, then rerun the same command",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        # The same seed writes the same bytes, so a rerun simply writes the dataset again.
        return interrupted("\ncaption-data: interrupted; rerun the same command to write it again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
