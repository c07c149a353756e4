"""The attend decoder end to end on the test run's synthetic data: the encoder's feature map
is cached apart from its pooled features, training and SCST run on it, and it exports
stepwise to TFLite int8 and ONNX fp32 bundles that caption like the Keras run."""

import json

import numpy as np
import pytest
from conftest import train_kind_and_export

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions

EPOCHS = 6


@pytest.fixture(scope="module")
def attend(e2e, tmp_path_factory):
    return train_kind_and_export(
        e2e,
        tmp_path_factory.mktemp("attend"),
        "attend",
        EPOCHS,
        (("onnx", "fp32"), ("tflite", "int8")),
    )


def test_the_map_is_cached_apart_from_the_pooled_features(attend):
    folders = sorted(p.name for p in (attend["e2e"]["root"] / "features").iterdir())
    maps = [name for name in folders if name.startswith("mobilenet_synth-map-")]
    assert {name.split("-")[2] for name in maps} == {"train", "dev", "test"}, folders
    pooled = [name for name in folders if not name.startswith("mobilenet_synth-map-")]
    assert pooled, "the e2e run's pooled features are still there"
    train_map = np.load(
        next((attend["e2e"]["root"] / "features").glob("*-map-train-*/features.npy"))
    )
    assert train_map.shape[1:] == (36, 32)  # [N, P, F]: the synthetic encoder's 6 x 6 map


def test_the_run_records_its_map_and_learns_the_scenes(attend):
    config = json.loads((attend["root"] / "run" / "config.json").read_text())
    assert config["decoder"]["kind"] == "attend"
    assert (config["decoder"]["feature_positions"], config["decoder"]["feature_dim"]) == (36, 32)
    # Six epochs on 1,600 scenes: 0.47 measured (a random decoder names none); the inject
    # LSTM of the e2e run reaches about 0.9 in 25.
    assert attend["metrics"]["scene_accuracy"] >= 0.35, attend["metrics"]


def test_the_bundles_declare_the_map_and_caption_like_keras(attend):
    onnx = attend["bundles"][("onnx", "fp32")]
    assert onnx["decoder"]["kind"] == "attend"
    assert onnx["encoder"]["feature_positions"] == 36
    encoder = onnx["models"]["encoder"]["outputs"][0]
    assert encoder["shape"][1:] == [36, 32]
    memory = [t for t in onnx["models"]["decoder_init"]["outputs"] if t["name"] == "memory"]
    assert memory and memory[0]["shape"][1:] == [36, 96]  # [B, P, U]
    assert onnx["parity"]["identical_caption_rate"] == 1.0  # float: Keras' words exactly
    int8 = attend["bundles"][("tflite", "int8")]
    assert int8["parity"]["same_scene_rate"] >= 0.8, int8["parity"]


def test_beam_search_carries_the_memory_with_its_beams(attend):
    """Beam search reorders every state row, the [B, P, U] memory too: beam 3 on the fp32
    bundle gives the Keras run's beam-3 captions."""
    from edgecap.edge_runtime.evaluation.datasets import load_dataset
    from edgecap.train.keras_captioner import KerasCaptioner

    dataset = load_dataset(attend["e2e"]["data"])
    paths = [dataset.image_path(i) for i in dataset.splits["test"][:5]]
    decode = DecodeOptions(beam_width=3, length_penalty=0.5)
    keras = KerasCaptioner.open(attend["root"] / "run")
    with Captioner.open(attend["root"] / "onnx-fp32") as device:
        for path in paths:
            assert device.caption(path, decode=decode).text == keras.caption(path, decode).text


def test_scst_fine_tunes_an_attend_run(attend, tmp_path):
    from edgecap.train.scst import ScstConfig, scst

    run = tmp_path / "scst"
    config = ScstConfig(epochs=1, learning_rate=1e-4, samples=2, images_per_batch=64)
    scst(attend["root"] / "run", run, config, progress=False)
    written = json.loads((run / "config.json").read_text())
    assert written["decoder"]["kind"] == "attend" and written["scst"]["epochs"] == 1
    assert (run / "decoder.keras").is_file()


def test_extract_feature_map_fills_the_cache_that_attend_training_reads(attend):
    """`caption-train extract --feature-map` keys the map as training does: run on the cache
    the attend run filled, it finds every split there and computes nothing."""
    from edgecap.train.extract import extract

    cache = attend["e2e"]["root"] / "features"
    before = sorted(p.name for p in cache.iterdir())
    done = extract(str(attend["e2e"]["data"]), "mobilenet_synth", "default", str(cache),
                   splits=("dev", "test"), progress=False, spatial=True)  # fmt: skip
    assert all(what.endswith("all shards joined") for what in done.values()), done
    assert sorted(p.name for p in cache.iterdir()) == before


def test_info_says_the_encoder_gives_a_map(attend, capsys):
    from edgecap.edge_runtime import cli

    assert cli.main(["info", str(attend["root"] / "tflite-int8")]) == 0
    out = capsys.readouterr().out
    assert "36 positions × 32 features" in out
    assert "decoder     attend, 96 units, embedding 48" in out
