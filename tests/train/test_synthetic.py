import hashlib
from collections import Counter

from PIL import Image

from edgecap.edge_runtime.evaluation.datasets import IMAGES_DIR, load_dataset
from edgecap.edge_runtime.evaluation.scenes import (
    COLORS,
    SHAPES,
    SIZES,
    captions_for,
    load_scenes,
    parse_caption,
    scene_accuracy,
    scene_key,
)
from edgecap.train.synthetic import generate


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_bytes(tmp_path):
    generate(tmp_path / "a", 24, seed=7, progress=False)
    generate(tmp_path / "b", 24, seed=7, progress=False)
    generate(tmp_path / "c", 24, seed=8, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_splits_and_captions(tmp_path):
    counts = generate(tmp_path, 80, seed=1, image_size=64, progress=False)
    assert (counts["train"], counts["dev"], counts["test"]) == (60, 10, 10)  # 6:1:1
    dataset = load_dataset(tmp_path)
    assert [len(dataset.splits[s]) for s in ("train", "dev", "test")] == [60, 10, 10]
    assert all(len(c) == 5 and len(set(c)) == 5 for c in dataset.captions.values())
    with Image.open(tmp_path / IMAGES_DIR / dataset.splits["test"][0]) as img:
        assert img.size == (64, 64) and img.format == "JPEG"


def test_scenes_cover_the_grammar_and_every_paraphrase_parses_back(tmp_path):
    generate(tmp_path, 400, seed=3, progress=False)
    scenes = load_scenes(tmp_path)
    objects = [o for s in scenes.values() for o in s["objects"]]
    assert {o["color"] for o in objects} == set(COLORS) and len(COLORS) >= 6
    assert {o["shape"] for o in objects} == set(SHAPES) and len(SHAPES) >= 4
    assert {o["size"] for o in objects} == set(SIZES)
    n_objects = Counter(len(s["objects"]) for s in scenes.values())
    assert set(n_objects) == {1, 2}
    assert all((s["relation"] is None) == (len(s["objects"]) == 1) for s in scenes.values())
    for scene in scenes.values():
        for caption in captions_for(scene):
            assert parse_caption(caption) == scene_key(scene), caption


def test_relations_are_true_in_the_pixels(tmp_path):
    generate(tmp_path, 200, seed=5, progress=False)
    for scene in load_scenes(tmp_path).values():
        if scene["relation"] is None:
            continue
        a, b = scene["objects"]
        gap = {
            "to the left of": b["x"] - a["x"],
            "to the right of": a["x"] - b["x"],
            "above": b["y"] - a["y"],
            "below": a["y"] - b["y"],
        }
        assert gap[scene["relation"]] > a["r"] + b["r"]


def test_scene_accuracy_counts_equivalent_descriptions():
    scene = {
        "objects": [
            {"size": "small", "color": "red", "shape": "circle"},
            {"size": "large", "color": "blue", "shape": "square"},
        ],
        "relation": "to the left of",
    }
    scenes = {"x.jpg": scene, "y.jpg": scene, "z.jpg": scene}
    predictions = {
        "x.jpg": "a large blue square to the right of a small red circle",  # same scene, other order
        "y.jpg": "a small red circle to the right of a large blue square",  # wrong relation
        "z.jpg": "a small red circle",  # missing object
    }
    assert scene_accuracy(predictions, scenes) == 1 / 3
