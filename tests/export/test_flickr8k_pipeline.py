"""`make flickr8k` on the data a user can get: Karpathy's dataset_flickr8k.json with the
images folder as commonly distributed, and Keras' published ImageNet weights where no
weights folder is given. Only the paths that need no download: the steps are recorded,
not run."""

import json

import pytest
from PIL import Image

from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.export import pipeline
from edgecap.train.encoders import IMAGENET_ALPHAS, get_encoder_spec, resolve_weights


@pytest.fixture
def karpathy_flickr8k(tmp_path):
    """dataset_flickr8k.json with Flicker8k_Dataset/ beside it (how Flickr8k_Dataset.zip
    unpacks), one image per split."""
    images = tmp_path / "Flicker8k_Dataset"
    images.mkdir()
    entries = []
    for name, split in (("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test")):
        Image.new("RGB", (40, 30), "white").save(images / name)
        entries.append({"filename": name, "split": split, "sentences": [{"raw": "a dog"}]})
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k", "images": entries}))
    return path


def _steps(monkeypatch, argv: list[str]) -> list[list[str]]:
    steps = []
    monkeypatch.setattr(pipeline, "_step", lambda done, command, log: steps.append(command))
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *a, **k: None)  # the table
    assert pipeline.main(argv) == 0
    return steps


def test_without_a_weights_folder_every_model_trains_from_keras_imagenet_weights(
    karpathy_flickr8k, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("IMAGENET_WEIGHTS", raising=False)
    dataset = load_dataset(karpathy_flickr8k)  # the images are found beside the JSON file
    assert dataset.image_path("a.jpg") == karpathy_flickr8k.parent / "Flicker8k_Dataset" / "a.jpg"

    steps = _steps(monkeypatch, ["--data", str(karpathy_flickr8k), "--out", str(tmp_path / "o")])
    assert "Keras' ImageNet weights (--weights imagenet)" in capsys.readouterr().out
    trainings = [s for s in steps if s[1] == "--config"]
    assert len(trainings) == len(pipeline.MODELS)
    for command in trainings:
        assert command[command.index("--weights") + 1] == "imagenet"
    for command in steps:
        if "--data" in command:
            assert command[command.index("--data") + 1] == str(karpathy_flickr8k)


@pytest.mark.parametrize("model", pipeline.MODELS, ids=[m.name for m in pipeline.MODELS])
def test_keras_publishes_imagenet_weights_for_every_model_encoder(model):
    spec = get_encoder_spec(model.encoder)
    assert resolve_weights(spec, "imagenet") == "imagenet"
    assert spec.alpha in IMAGENET_ALPHAS[spec.family or spec.name]


def test_a_weights_folder_without_a_models_file_says_what_to_do(
    karpathy_flickr8k, tmp_path, monkeypatch
):
    (tmp_path / "weights").mkdir()
    argv = ["--data", str(karpathy_flickr8k), "--weights-dir", str(tmp_path / "weights")]
    with pytest.raises(SystemExit) as error:
        _steps(monkeypatch, [*argv, "--out", str(tmp_path / "o"), "--models", "mobilenet_v2-lstm"])
    assert "weights file not found" in str(error.value)
    assert "leave IMAGENET_WEIGHTS unset for Keras' ImageNet weights" in str(error.value)


def test_a_model_with_finetune_and_scst_stages_chains_its_run_folders(
    karpathy_flickr8k, tmp_path, monkeypatch
):
    import dataclasses

    staged = dataclasses.replace(pipeline.MODELS[0], stages=("finetune", "scst"))
    monkeypatch.setattr(pipeline, "MODELS", (staged,))
    out = tmp_path / "o"
    steps = _steps(monkeypatch, ["--data", str(karpathy_flickr8k), "--out", str(out),
                                 "--weights-dir", "", "--bundles", "none"])  # fmt: skip
    name, recipe = staged.name, str(staged.config)
    train, finetune, scst = steps[:3]
    assert train[train.index("--out") + 1] == str(out / f"{name}-xe")
    assert finetune[1:3] == ["finetune", str(out / f"{name}-xe")]
    assert finetune[finetune.index("--out") + 1] == str(out / f"{name}-ft")
    assert scst[1:3] == ["scst", str(out / f"{name}-ft")]
    assert scst[scst.index("--out") + 1] == str(out / name)  # the last stage is the model
    for command in (train, finetune, scst):  # every stage reads its section of the recipe
        assert command[command.index("--config") + 1] == recipe


def test_the_models_are_the_flickr8k_recipes_in_their_order():
    assert [m.name for m in pipeline.MODELS] == ["mobilenet_v2-lstm", "mobilenet_v2-blstm",
                                                 "mobilenet_025-merge", "mobilenet_v2_035-lstm",
                                                 "mobilenet_v2-twoway"]  # fmt: skip
    recommended = pipeline.MODELS[0]
    assert recommended.stages == ("finetune", "scst") and recommended.length_penalty == 1.0
    assert ("tflite", "int8") in recommended.bundles
