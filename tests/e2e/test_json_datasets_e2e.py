"""A Karpathy JSON dataset and a COCO folder train, export and caption end to end, tiny."""

import json
import shutil

import pytest

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.train.synthetic import generate

pytestmark = pytest.mark.slow  # two tiny trainings and exports: about two minutes


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("json-e2e") / "flickr"
    generate(root, 240, seed=5, image_size=96, progress=False)
    return root, load_dataset(root)


def _train_export_caption(data, tmp_path):
    from edgecap.export.exporter import export_bundle
    from edgecap.train.decoders import DecoderConfig
    from edgecap.train.training import TrainConfig, train

    config = TrainConfig(
        data=str(data),
        encoder="mobilenet_synth",
        decoder=DecoderConfig(units=32, embed_dim=16),
        epochs=2,
        batch_size=64,
        feature_cache=str(tmp_path / "features"),
        keep="last",
    )
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["split"] == "test" and metrics["bleu1"] > 0
    export_bundle(tmp_path / "run", tmp_path / "bundle", "int8", parity_images=8)
    dataset = load_dataset(data)
    with Captioner.open(tmp_path / "bundle") as captioner:
        image = dataset.image_path(dataset.splits["test"][0])
        assert captioner.caption(image).text  # a caption, through the bundle
    return dataset


def test_a_karpathy_json_dataset_trains_exports_and_captions(synth, tmp_path):
    root, flickr = synth
    split_names = {"train": "train", "dev": "val", "test": "test"}
    images = [
        {"filename": name, "split": split_names[split],
         "sentences": [{"raw": c} for c in flickr.captions[name]]}
        for split, names in flickr.splits.items() for name in names
    ]  # fmt: skip
    karpathy = root / "dataset_flickr8k.json"  # images in Flicker8k_Dataset beside it
    karpathy.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    dataset = _train_export_caption(karpathy, tmp_path)
    assert {k: len(v) for k, v in dataset.splits.items()} == {
        k: len(v) for k, v in flickr.splits.items()
    }


def test_a_coco_folder_trains_exports_and_captions(synth, tmp_path):
    root, flickr = synth
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    # COCO has train2014 and val2014 only; its val images are split into dev and test.
    for folder, names in (("train2014", flickr.splits["train"]),
                          ("val2014", flickr.splits["dev"] + flickr.splits["test"])):  # fmt: skip
        (coco / folder).mkdir()
        entries, captions = [], []
        for number, name in enumerate(names):
            shutil.copyfile(flickr.image_path(name), coco / folder / name)
            entries.append({"id": number, "file_name": name})
            captions += [{"image_id": number, "caption": c} for c in flickr.captions[name]]
        (coco / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"images": entries, "annotations": captions})
        )
    dataset = _train_export_caption(coco, tmp_path)
    assert len(dataset.splits["train"]) == len(flickr.splits["train"])
    assert len(dataset.splits["dev"]) + len(dataset.splits["test"]) == 60
