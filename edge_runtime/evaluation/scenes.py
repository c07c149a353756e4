"""The language of the synthetic scenes: their words, their caption templates, and the
parser that turns a caption back into a scene for *scene accuracy*.

It lives in edge_runtime's evaluation room (the lowest room that needs it) so that the
generator in train/, training-time evaluation and caption-bench's reports share one grammar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from ..text import normalize_caption

SCENES_FILE = "scenes.json"  # a synthetic dataset's ground truth, beside its captions
SIZES = ("small", "large")
# RGB centres; the generator jitters them a little. Hues are far apart so that the
# colour of a 10-pixel object survives JPEG and int8 quantization.
COLORS: Mapping[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 235),
    "yellow": (240, 225, 50),
    "purple": (160, 60, 210),
    "orange": (250, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# relation -> its inverse: "A left of B" says the same as "B right of A".
RELATIONS: Mapping[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
# The canonical direction of each axis, used to compare scenes.
_CANONICAL = {"to the left of", "above"}

SINGLE_TEMPLATES = ("{a}", "there is {a}", "a picture of {a}", "an image of {a}", "a photo of {a}")
# {rel} reads A -> B, {inv} reads B -> A.
PAIR_TEMPLATES = (
    "{a} {rel} {b}",
    "{b} {inv} {a}",
    "there is {a} {rel} {b}",
    "a picture of {b} {inv} {a}",
    "an image of {a} {rel} {b}",
)
_PREFIXES = ("there is ", "a picture of ", "an image of ", "a photo of ")

_OBJECT = rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
_RELATION = "|".join(sorted(RELATIONS, key=len, reverse=True))
_CAPTION_RE = re.compile(rf"^{_OBJECT}(?: ({_RELATION}) {_OBJECT})?$")

SceneKey = tuple  # (obj,) or (obj_a, canonical_relation, obj_b); obj = (size, colour, shape)


def object_phrase(obj: Mapping[str, str]) -> str:
    return f"a {obj['size']} {obj['color']} {obj['shape']}"


def captions_for(scene: Mapping) -> list[str]:
    """The five paraphrases of a scene: {'objects': [...], 'relation': str | None}."""
    objects = scene["objects"]
    if len(objects) == 1:
        return [t.format(a=object_phrase(objects[0])) for t in SINGLE_TEMPLATES]
    rel = scene["relation"]
    a, b = object_phrase(objects[0]), object_phrase(objects[1])
    return [t.format(a=a, b=b, rel=rel, inv=RELATIONS[rel]) for t in PAIR_TEMPLATES]


def _canonical(obj_a: tuple, relation: str, obj_b: tuple) -> SceneKey:
    if relation in _CANONICAL:
        return (obj_a, relation, obj_b)
    return (obj_b, RELATIONS[relation], obj_a)


def scene_key(scene: Mapping) -> SceneKey:
    """A hashable form of a scene in which equivalent descriptions compare equal."""
    objs = [(o["size"], o["color"], o["shape"]) for o in scene["objects"]]
    if len(objs) == 1:
        return (objs[0],)
    return _canonical(objs[0], scene["relation"], objs[1])


def parse_caption(caption: str) -> SceneKey | None:
    """The scene a caption describes, or None if it is not a well-formed scene caption."""
    text = normalize_caption(caption)
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    match = _CAPTION_RE.match(text)
    if match is None:
        return None
    g = match.groups()
    obj_a = (g[0], g[1], g[2])
    if g[3] is None:
        return (obj_a,)
    return _canonical(obj_a, g[3], (g[4], g[5], g[6]))


def scene_accuracy(predictions: Mapping[str, str], scenes: Mapping[str, Mapping]) -> float:
    """Fraction of images whose predicted caption names exactly the true objects and relation."""
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [img for img in predictions if img not in scenes]
    if missing:
        raise KeyError(f"{len(missing)} predicted images have no scene truth, e.g. {missing[0]}")
    correct = sum(parse_caption(cap) == scene_key(scenes[img]) for img, cap in predictions.items())
    return correct / len(predictions)


def load_scenes(data_dir: str | Path) -> dict[str, dict]:
    """The ground truth of a synthetic dataset, or {} for a real one (no scenes.json)."""
    path = Path(data_dir) / SCENES_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["scenes"]
