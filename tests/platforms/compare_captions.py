"""Compare two caption files of caption_images.py (e.g. x86 and an arm64 root), image by
image, and score both against the real Flickr8k references.

    python tests/platforms/compare_captions.py x86.jsonl arm64.jsonl \\
        --flickr8k ../shared/data/flickr8k --out compare.json

Images are grouped by their folder ("imagenet_check", "Flicker8k_Dataset"): each group gets
the identical-caption count and rate and the images whose captions differ (both captions
and the first word where they part). Images that are Flickr8k test-split images are scored
on both sides (BLEU-4, CIDEr-D; edgecap.edge_runtime.evaluation.metrics.score). Prints a summary;
--out writes it as JSON. Exit status 0 whatever the rate: a difference is a finding, not an
error (XNNPACK's ARM and x86 int8 kernels may round differently).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path, PurePosixPath


def read_jsonl(path: Path) -> dict[str, dict]:
    rows = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                rows[row["image"]] = row
            except (ValueError, KeyError) as error:
                raise SystemExit(f"{path}:{number}: not a caption line ({error})") from None
    if not rows:
        raise SystemExit(f"{path}: no captions")
    return rows


def first_difference(a: str, b: str) -> int:
    words_a, words_b = a.split(), b.split()
    for i, (x, y) in enumerate(zip(words_a, words_b, strict=False)):
        if x != y:
            return i
    return min(len(words_a), len(words_b))


def compare(a: dict[str, dict], b: dict[str, dict], references: dict | None) -> dict:
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise SystemExit(f"the files caption different images ({len(only)} apart, e.g. {only[0]})")
    groups: dict[str, list[str]] = {}
    for image in a:  # in the order captioned
        groups.setdefault(PurePosixPath(image).parent.name, []).append(image)
    result = {"images": len(a), "groups": {}}
    for name, images in groups.items():
        differ = [
            {
                "image": i,
                "a": a[i]["caption"],
                "b": b[i]["caption"],
                "first_different_word": first_difference(a[i]["caption"], b[i]["caption"]),
            }
            for i in images
            if a[i]["caption"] != b[i]["caption"]
        ]
        group = {
            "images": len(images),
            "identical": len(images) - len(differ),
            "identical_rate": round((len(images) - len(differ)) / len(images), 4),
            "identical_tokens": sum(a[i]["tokens"] == b[i]["tokens"] for i in images),
            "differ": differ,
        }
        scored = [i for i in images if references and PurePosixPath(i).name in references]
        if scored:
            from edgecap.edge_runtime.evaluation.metrics import score

            refs = {PurePosixPath(i).name: references[PurePosixPath(i).name] for i in scored}
            for side, rows in (("a", a), ("b", b)):
                s = score({PurePosixPath(i).name: rows[i]["caption"] for i in scored}, refs)
                group[f"scores_{side}"] = {
                    "images": s.images,
                    "bleu4": round(s.bleu4, 4),
                    "cider_d": round(s.cider_d, 4),
                }
        result["groups"][name] = group
    return result


def flickr8k_test_references(folder: Path) -> dict[str, list[str]]:
    from edgecap.edge_runtime.evaluation.datasets import load_dataset
    from edgecap.edge_runtime.evaluation.metrics import references_for

    dataset = load_dataset(folder, require_images=False)
    return references_for(dataset, dataset.splits["test"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="captions JSONL (the reference side, e.g. x86)")
    parser.add_argument("b", type=Path, help="captions JSONL to compare with it")
    parser.add_argument("--flickr8k", type=Path, help="Flickr8k annotation folder (to score)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON")
    args = parser.parse_args(argv)

    references = flickr8k_test_references(args.flickr8k) if args.flickr8k else None
    result = {"a": str(args.a), "b": str(args.b)}
    result.update(compare(read_jsonl(args.a), read_jsonl(args.b), references))
    for name, group in result["groups"].items():
        line = (
            f"{name}: {group['identical']}/{group['images']} identical captions "
            f"({100 * group['identical_rate']:.1f}%)"
        )
        if "scores_a" in group:
            sa, sb = group["scores_a"], group["scores_b"]
            line += (
                f"; BLEU-4 {sa['bleu4']:.4f} vs {sb['bleu4']:.4f}, "
                f"CIDEr-D {sa['cider_d']:.4f} vs {sb['cider_d']:.4f}"
            )
        print(line)
        for d in group["differ"][:5]:
            print(f"  {d['image']} (word {d['first_different_word']}): {d['a']!r} | {d['b']!r}")
        if len(group["differ"]) > 5:
            print(f"  ... and {len(group['differ']) - 5} more")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
