"""`caption-train gallery`: an HTML page and a PNG contact sheet of test photos, each with
its references and the captions of several models, read from their predictions.jsonl.

    caption-train gallery --data DIR --out artifacts/flickr8k/gallery \\
        keras=EVAL/predictions.jsonl int8=EVAL2/predictions.jsonl "int8 beam 3"=EVAL3/...

The page links the dataset's own image files and the sheet is written under --out: both
belong in artifacts/, never in the repository (the photos are not ours to publish).
"""

from __future__ import annotations

import html
import json
import os
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from edgecap.edge_runtime.atomic import atomic_path, write_text_atomic
from edgecap.edge_runtime.errors import EdgeCaptionError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.preprocess import load_image
from edgecap.edge_runtime.text import normalize_caption

TILE = 224  # photo side on the sheet, pixels
TEXT_WIDTH = 44  # characters per caption line on the sheet
COLUMNS = 4


def read_predictions(path: str | Path) -> dict[str, str]:
    """{image id: caption} from a predictions.jsonl of caption-train evaluate."""
    path = Path(path)
    out = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EdgeCaptionError(f"{path}: predictions file not found") from None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            out[str(row["image"])] = str(row["caption"])
        except (ValueError, KeyError, TypeError):
            raise EdgeCaptionError(
                f'{path}:{number}: expected {{"image": ..., "caption": ...}}'
            ) from None
    return out


def pick_images(ids: list[str], count: int) -> list[str]:
    """`count` ids spread evenly over the split: not cherry-picked, and the same every time."""
    if count >= len(ids):
        return list(ids)
    step = len(ids) / count
    return [ids[int(k * step)] for k in range(count)]


def write_gallery(
    data: str | Path,
    sources: dict[str, str | Path],
    out: str | Path,
    split: str = "test",
    count: int = 24,
) -> tuple[Path, Path]:
    """Writes OUT/index.html and OUT/contact_sheet.png; returns their paths."""
    dataset = load_dataset(data)
    captions = {label: read_predictions(path) for label, path in sources.items()}
    chosen = pick_images(dataset.splits[split], count)
    for label, predicted in captions.items():
        missing = [i for i in chosen if i not in predicted]
        if missing:
            raise EdgeCaptionError(
                f"{sources[label]}: no caption for {missing[0]} ({len(missing)} of the gallery's "
                f"{len(chosen)} {split} images); evaluate the whole {split} split"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id in chosen:
        src = os.path.relpath(dataset.image_path(image_id).resolve(), out.resolve())
        refs = "".join(
            f"<li>{html.escape(normalize_caption(c))}</li>" for c in dataset.captions[image_id]
        )
        ours = "".join(
            f"<dt>{html.escape(label)}</dt><dd>{html.escape(predicted[image_id])}</dd>"
            for label, predicted in captions.items()
        )
        rows.append(
            f'<tr><td><img src="{html.escape(src)}" width="{TILE}"><br><code>{image_id}</code></td>'
            f"<td><dl>{ours}</dl></td><td><ol>{refs}</ol></td></tr>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>edge-caption gallery</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:6px}"
        "dt{font-weight:bold}</style>"
        f"<h1>{len(chosen)} {split} images of {html.escape(str(dataset.root))}</h1>"
        "<table><tr><th>photo</th><th>captions</th><th>references</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    index = out / "index.html"
    write_text_atomic(index, page)
    sheet = out / "contact_sheet.png"
    with atomic_path(sheet, suffix=".png") as tmp:
        _contact_sheet(dataset, chosen, captions).save(tmp)
    return index, sheet


def _contact_sheet(dataset, chosen: list[str], captions: dict[str, dict[str, str]]) -> Image.Image:
    font = ImageFont.load_default()
    line_height = 12
    blocks = {
        image_id: [
            line
            for label, predicted in captions.items()
            for line in textwrap.wrap(f"{label}: {predicted[image_id]}", TEXT_WIDTH)
        ]
        for image_id in chosen
    }
    text_height = line_height * (max(len(b) for b in blocks.values()) + 2)
    cell_w, cell_h = TILE + 70, TILE + text_height
    rows = -(-len(chosen) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, image_id in enumerate(chosen):
        x, y = (k % COLUMNS) * cell_w, (k // COLUMNS) * cell_h
        photo = load_image(dataset.image_path(image_id)).resize((TILE, TILE))
        sheet.paste(photo, (x + 4, y + 4))
        draw.text((x + 4, y + TILE + 6), image_id, fill="gray", font=font)
        for n, line in enumerate(blocks[image_id]):
            draw.text((x + 4, y + TILE + 6 + line_height * (n + 1)), line, fill="black", font=font)
    return sheet
