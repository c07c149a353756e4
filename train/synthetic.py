"""Synthetic scenes in the Flickr8k layout, so the real loader, training and export all
run offline. The truth of every image goes to scenes.json for scene accuracy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgecap.edge_runtime.atomic import write_bytes_atomic, write_text_atomic
from edgecap.edge_runtime.evaluation.datasets import IMAGES_DIR, SPLIT_FILES, TOKEN_FILE
from edgecap.edge_runtime.evaluation.scenes import (
    COLORS,
    RELATIONS,
    SCENES_FILE,
    SHAPES,
    SIZES,
    captions_for,
)

SPLIT_RATIO = (6, 1, 1)  # train : dev : test, as Flickr8k's 6000/1000/1000
JPEG_QUALITY = 95
# Object radius as a fraction of the image side, per size word.
RADIUS = {"small": (0.085, 0.105), "large": (0.17, 0.20)}


def split_sizes(n_images: int) -> tuple[int, int, int]:
    total = sum(SPLIT_RATIO)
    n_dev = round(n_images * SPLIT_RATIO[1] / total)
    n_test = round(n_images * SPLIT_RATIO[2] / total)
    return n_images - n_dev - n_test, n_dev, n_test


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dull, low-saturation gradient with noise: varied, but never mistaken for an object colour."""
    base = rng.uniform(35, 120)
    tint = rng.uniform(-12, 12, size=3)
    start, end = base + tint, base + tint + rng.uniform(-25, 25, size=3)
    axis = rng.integers(2)
    ramp = (
        np.linspace(0.0, 1.0, size)[:, None] if axis == 0 else np.linspace(0.0, 1.0, size)[None, :]
    )
    ramp = np.broadcast_to(ramp, (size, size))[..., None]
    img = start + (end - start) * ramp + rng.normal(0, 5, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85  # same visual area as a circle of radius r, roughly
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)],
            fill=fill,
        )
    elif shape == "diamond":
        draw.polygon(
            [(cx, cy - r * 1.1), (cx + r * 0.8, cy), (cx, cy + r * 1.1), (cx - r * 0.8, cy)],
            fill=fill,
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _random_object(rng: np.random.Generator, size: int) -> dict:
    size_word = SIZES[rng.integers(len(SIZES))]
    lo, hi = RADIUS[size_word]
    return {
        "size": size_word,
        "color": list(COLORS)[rng.integers(len(COLORS))],
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "r": float(rng.uniform(lo, hi) * size),
    }


def _place_pair(rng: np.random.Generator, size: int, a: dict, b: dict, relation: str) -> None:
    """Place a and b so that "a <relation> b" is clearly true and they do not overlap."""
    margin = 2.0
    along = relation in ("to the left of", "to the right of")
    first, second = (a, b) if relation in ("to the left of", "above") else (b, a)
    for _ in range(1000):
        # Coordinate along the relation's axis: first object before the second, with a gap.
        p1 = rng.uniform(first["r"] + margin, size - first["r"] - margin)
        p2 = rng.uniform(second["r"] + margin, size - second["r"] - margin)
        gap = p2 - p1 - (first["r"] + second["r"])
        # Across the axis the offset stays small relative to the gap, so the relation is unambiguous.
        q1 = rng.uniform(first["r"] + margin, size - first["r"] - margin)
        q2 = rng.uniform(second["r"] + margin, size - second["r"] - margin)
        if gap > 0.04 * size and abs(q2 - q1) < 0.5 * (p2 - p1):
            break
    else:  # pragma: no cover - the sizes above always leave room
        raise RuntimeError("could not place objects")
    for obj, p, q in ((first, p1, q1), (second, p2, q2)):
        obj["x"], obj["y"] = (p, q) if along else (q, p)


def make_scene(rng: np.random.Generator, size: int) -> dict:
    n_objects = 1 if rng.random() < 0.3 else 2
    objects = [_random_object(rng, size) for _ in range(n_objects)]
    relation = None
    if n_objects == 1:
        r = objects[0]["r"]
        objects[0]["x"], objects[0]["y"] = (
            float(v) for v in rng.uniform(r + 2, size - r - 2, size=2)
        )
    else:
        relation = list(RELATIONS)[rng.integers(len(RELATIONS))]
        _place_pair(rng, size, objects[0], objects[1], relation)
    return {"objects": objects, "relation": relation}


def render(scene: dict, rng: np.random.Generator, size: int) -> Image.Image:
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(
            int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[obj["color"]], jitter, strict=True)
        )
        _draw(draw, obj["shape"], obj["x"], obj["y"], obj["r"], fill)
    return image


def generate(
    out_dir: str | Path, n_images: int, seed: int = 0, image_size: int = 96, progress: bool = True
) -> dict:
    """Write a synthetic dataset; the same (n_images, seed, image_size) gives identical bytes."""
    if n_images < 8:
        raise ValueError("need at least 8 images for a 6:1:1 split")
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes: dict[str, dict] = {}
    token_lines: list[str] = []
    names = [f"synth_{i:05d}.jpg" for i in range(n_images)]
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="synth", unit="img")
    for name in iterator:
        scene = make_scene(rng, image_size)
        buf = io.BytesIO()
        render(scene, rng, image_size).save(buf, format="JPEG", quality=JPEG_QUALITY)
        write_bytes_atomic(out_dir / IMAGES_DIR / name, buf.getvalue())
        scene["objects"] = [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in o.items()}
            for o in scene["objects"]
        ]
        scenes[name] = scene
        token_lines += [f"{name}#{n}\t{cap}" for n, cap in enumerate(captions_for(scene))]
    n_train, n_dev, _ = split_sizes(n_images)
    splits = {
        "train": names[:n_train],
        "dev": names[n_train : n_train + n_dev],
        "test": names[n_train + n_dev :],
    }
    write_text_atomic(out_dir / TOKEN_FILE, "\n".join(token_lines) + "\n")
    for split, file_name in SPLIT_FILES.items():
        write_text_atomic(out_dir / file_name, "\n".join(splits[split]) + "\n")
    write_text_atomic(
        out_dir / SCENES_FILE,
        json.dumps(
            {"seed": seed, "image_size": image_size, "scenes": scenes}, sort_keys=True, indent=1
        )
        + "\n",
    )
    return {
        "images": n_images,
        "train": len(splits["train"]),
        "dev": len(splits["dev"]),
        "test": len(splits["test"]),
    }
