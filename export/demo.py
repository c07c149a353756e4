"""Steps of `make demo` that are not a CLI of their own: lay out the test images and a
short video for edge_caption, then score what edge_caption printed into report.json. The
demo's pipeline, as export/pipeline.py is Flickr8k's (synthetic data -> caption-train ->
caption-export -> edge_caption -> this report).

    python -m edgecap.export.demo prepare artifacts/demo
    python -m edgecap.export.demo report artifacts/demo --bundle B --run R
    caption-bench render demo artifacts/demo/report.json --into README.md
    python -m edgecap.export.demo photos docs/photos [DIR ...] [--annotations TOKENS]

`photos` ends the demo on real photos: the built-in Flickr8k model captions each folder;
photos that Flickr8k's annotation file knows are printed with one of their reference
captions, and those get scored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections import Counter
from pathlib import Path

from edgecap.benchmarks.tables import markdown_table
from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.bundle import bundle_bytes
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.metrics import score, score_split

VIDEO_IMAGES = 20  # test images in the demo video
FRAMES_PER_IMAGE = 15  # at 30 fps: 10 s of video, each image held for half a second
VIDEO_FPS = 30
VIDEO_SIDE = 192  # upscaled, as a camera frame would be larger than the encoder input


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prepare(demo: Path) -> None:
    """Copy the test split's images into one folder, and make a video from the first few."""
    import numpy as np
    from PIL import Image

    from edgecap.edge_runtime.overlay import AnnotatedVideoWriter

    dataset = load_dataset(demo / "data")
    test_ids = dataset.splits["test"]
    folder = demo / "test_images"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for image_id in test_ids:
        shutil.copyfile(dataset.image_path(image_id), folder / image_id)

    video = demo / "test_video.mp4"
    # edge_caption's mp4v writer: the file appears under its name only once complete.
    writer = AnnotatedVideoWriter(video, VIDEO_FPS, (VIDEO_SIDE, VIDEO_SIDE))
    for image_id in test_ids[:VIDEO_IMAGES]:
        rgb = Image.open(dataset.image_path(image_id)).convert("RGB")
        rgb = rgb.resize((VIDEO_SIDE, VIDEO_SIDE), Image.Resampling.BILINEAR)
        bgr = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
        for _ in range(FRAMES_PER_IMAGE):
            writer.write(bgr)
    writer.close()
    write_json_atomic(
        demo / "test_video.json",
        {"images": test_ids[:VIDEO_IMAGES], "frames_per_image": FRAMES_PER_IMAGE, "fps": VIDEO_FPS},
    )
    print(
        f"prepared {len(test_ids)} test images in {folder} and a {VIDEO_IMAGES * FRAMES_PER_IMAGE / VIDEO_FPS:.0f} s video {video}"
    )


def report(demo: Path, bundle: Path, run: Path) -> dict:
    dataset = load_dataset(demo / "data")
    image_lines = read_jsonl(demo / "test_captions.jsonl")  # edge_caption's, one per image
    predictions = {Path(r["source"]).name: r["caption"] for r in image_lines}
    missing = set(dataset.splits["test"]) - set(predictions)
    if missing:
        raise SystemExit(
            f"edge_caption gave no caption for {len(missing)} test images, e.g. {sorted(missing)[0]}"
        )
    scores = score_split(dataset, "test", predictions)

    video_info = json.loads((demo / "test_video.json").read_text())
    video_lines = read_jsonl(demo / "video_captions.jsonl")  # one per frame
    captioned_frames = [r for r in video_lines if "caption" in r]
    video_skipped = dict(Counter(r["skipped"] for r in video_lines if "skipped" in r))
    shown, per_image = video_info["images"], video_info["frames_per_image"]
    video_predictions = {  # each captioned frame's caption, for the image the frame shows
        shown[int(r["source"].rsplit("#frame=", 1)[1]) // per_image]: r["caption"]
        for r in captioned_frames
    }

    video_scores = score_split(dataset, "test", video_predictions).to_json()
    keras_metrics = (
        json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    )
    result = {
        **scores.to_json(),
        "test_images": len(predictions),
        "video_frames": len(video_lines),
        "video_frames_captioned": len(captioned_frames),
        "video_frames_skipped": video_skipped,
        "video_scene_accuracy": video_scores["scene_accuracy"],
        "caption_ms_median": round(statistics.median(r["ms"] for r in image_lines), 2),
        "run": str(run),
        "bundle": str(bundle),
        "bundle_bytes": bundle_bytes(bundle),
        "keras_test_metrics": keras_metrics,
        "measured_through": "edge_caption (ai_edge_litert) on the int8 bundle",
        "examples": [{"image": i, "caption": predictions[i]} for i in dataset.splits["test"][:5]],
    }
    write_json_atomic(demo / "report.json", result)
    # The figures as the README shows them (demo_table), then what the table leaves out.
    print(f"\n== edge-caption demo ==\n\n{demo_table(result)}\n")
    print(f"bundle      {bundle}")
    print(f"video       skipped {video_skipped or 'none'}; annotated {demo / 'annotated.mp4'}")
    for example in result["examples"][:3]:
        print(f"  {example['image']}: {example['caption']}")
    print(f"report      {demo / 'report.json'}")
    return result


def demo_table(result: dict) -> str:
    """The README's demo table, from report.json: the Keras run and the shipped bundle."""
    keras = result.get("keras_test_metrics") or {}

    def cell(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    keras_row = ["Keras run (TensorFlow, for reference)", "—"]
    keras_row += [cell(keras.get(k)) for k in ("scene_accuracy", "bleu4", "cider_d")] + ["—"]
    bundle_row = ["TFLite int8 bundle", f"{result['bundle_bytes']:,} B"]
    bundle_row += [cell(result.get(k)) for k in ("scene_accuracy", "bleu4", "cider_d")]
    bundle_row.append(cell(result["caption_ms_median"], 2))

    return "\n".join(
        [
            f"{result['test_images']} test images, greedy; the bundle's figures measured through "
            f"{result['measured_through']}.",
            "",
            markdown_table(
                ["model", "size", "scene accuracy", "BLEU-4", "CIDEr-D", "ms per caption (median)"],
                [keras_row, [f"**{c}**" for c in bundle_row]],
            ),
            "",
            f"The live replay of the {result['video_frames']}-frame test video: "
            f"{result['video_frames_captioned']} frames captioned, scene accuracy "
            f"{cell(result.get('video_scene_accuracy'))}.",
        ]
    )


def photos(folders: list[Path], annotations: Path | None, out: Path | None) -> dict:
    """Caption the photos of `folders` with the built-in model; score those with references."""
    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.edge_runtime.evaluation.datasets import read_captions
    from edgecap.edge_runtime.sources import image_files
    from edgecap.edge_runtime.text import normalize_caption

    references = {}
    if annotations is not None:
        captions, _ = read_captions(annotations)
        references = {k: [normalize_caption(c) for c in v] for k, v in captions.items()}
    captioned = []
    with Captioner.open() as captioner:
        print(f"\n== real photos, built-in model ({captioner.bundle.path.name}) ==")
        for folder in folders:
            for path in image_files(folder):
                result = captioner.caption(path)
                row = {"photo": str(path), "caption": result.text,
                       "ms": round(result.timings_ms["total"], 2)}  # fmt: skip
                print(f"{path.name:<28} {result.text}")
                if path.name in references:
                    row["reference"] = references[path.name][0]
                    print(f"{'':<28} reference: {row['reference']}")
                captioned.append(row)
    scored = {Path(r["photo"]).name: r["caption"] for r in captioned if "reference" in r}
    result = {"photos": captioned}
    if scored:
        scores = score(scored, {k: references[k] for k in scored}).to_json()
        result["scores"] = scores
        print(
            f"{len(scored)} photos with Flickr8k references: BLEU-4 {scores['bleu4']:.3f}, "
            f"CIDEr-D {scores['cider_d']:.3f} (document frequencies from these photos' "
            f"references only), {scores['dangling_endings']:.1%} of captions ending on a "
            "dangling word"
        )
    ms = [r["ms"] for r in captioned]
    if ms:
        print(f"{len(captioned)} photos, {statistics.median(ms):.1f} ms per caption (median)")
    if out is not None:
        write_json_atomic(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecap.export.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("demo", type=Path)
    r = sub.add_parser("report")
    r.add_argument("demo", type=Path)
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--run", type=Path, required=True)
    ph = sub.add_parser("photos", help="caption folders of real photos with the built-in model")
    ph.add_argument("folders", type=Path, nargs="+")
    ph.add_argument("--annotations", type=Path, help="Flickr8k.token.txt: references by file name")
    ph.add_argument("--out", type=Path, help="write the captions and scores to this JSON file")
    args = parser.parse_args(argv)
    if args.command == "photos":
        photos(args.folders, args.annotations, args.out)
    elif args.command == "prepare":
        prepare(args.demo)
    else:
        report(args.demo, args.bundle, args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
