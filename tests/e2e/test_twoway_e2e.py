"""The twoway decoder end to end on the test run's synthetic data: trained with both
directions in one model, exported stepwise as two decoder pairs to TFLite fp32 and int8
and ONNX fp32 bundles that pass export's parity gate, and captioned on the device runtime
as the Keras run captions, greedy and beam alike."""

import pytest
from conftest import train_kind_and_export

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions, TwoWayModel, decode_rows

EPOCHS = 6
BUNDLES = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"))
DECODER_FILES = ("decoder_init", "decoder_step", "decoder_init_backward", "decoder_step_backward")


@pytest.fixture(scope="module")
def twoway(e2e, tmp_path_factory):
    return train_kind_and_export(e2e, tmp_path_factory.mktemp("twoway"), "twoway", EPOCHS, BUNDLES)


def test_the_run_learns_the_scenes(twoway):
    # Six epochs on 1,600 scenes (a random decoder names none); the e2e LSTM reaches ~0.9
    # in 25.
    assert twoway["metrics"]["scene_accuracy"] >= 0.35, twoway["metrics"]


@pytest.mark.parametrize(("fmt", "precision"), BUNDLES)
def test_each_bundle_holds_both_pairs_and_passes_parity(twoway, fmt, precision):
    manifest = twoway["bundles"][(fmt, precision)]
    assert manifest["decoder"]["kind"] == "twoway"
    models = manifest["models"]
    assert list(models) == ["encoder", *DECODER_FILES]
    folder = twoway["root"] / f"{fmt}-{precision}"
    for role in DECODER_FILES:
        assert (folder / models[role]["file"]).is_file()
        dynamic = precision == "int8"  # an int8 recipe's decoders are dynamic-range
        assert models[role]["precision"] == ("dynamic" if dynamic else precision)
    step = models["decoder_step_backward"]
    assert [t["name"] for t in step["inputs"]] == ["token", "h", "c"]
    parity = manifest["parity"]
    assert {"backward_h", "backward_c", "log_probs"} <= set(parity["max_abs_diff"])
    if precision == "fp32":
        assert parity["identical_caption_rate"] == 1.0, parity
        assert parity["max_abs_diff"]["backward_h"] < 1e-4, parity
    else:
        assert parity["same_scene_rate"] >= 0.8, parity


def test_the_device_captions_like_keras_greedy_and_beam(twoway):
    from edgecap.edge_runtime.evaluation.datasets import load_dataset
    from edgecap.train.keras_captioner import KerasCaptioner

    dataset = load_dataset(twoway["e2e"]["data"])
    paths = [dataset.image_path(i) for i in dataset.splits["test"][:6]]
    keras = KerasCaptioner.open(twoway["root"] / "run")
    assert isinstance(keras.step_model, TwoWayModel)
    with Captioner.open(twoway["root"] / "onnx-fp32") as device:
        assert isinstance(device.step_model, TwoWayModel)
        for decode in (DecodeOptions(), DecodeOptions(beam_width=3, length_penalty=0.5)):
            for path in paths:
                assert device.caption(path, decode=decode).text == keras.caption(path, decode).text


def test_the_caption_is_the_likelier_of_the_two_directions(twoway):
    """Each direction alone, through the bundle's own step models: the captioner's caption
    is one of them (the backward one read left to right) with the higher score."""
    from edgecap.edge_runtime.evaluation.datasets import load_dataset

    dataset = load_dataset(twoway["e2e"]["data"])
    chose_backward = 0
    with Captioner.open(twoway["root"] / "tflite-fp32") as device:
        m = device.manifest
        for image_id in dataset.splits["test"][:20]:
            features = device.encode(dataset.image_path(image_id))  # [1, F]
            (forward,), (backward,) = (
                decode_rows(direction, features, m.start_id, m.end_id, m.max_length)
                for direction in (device.step_model.forward, device.step_model.backward)
            )
            (kept,) = device.caption_features(features)
            best = max(forward.score, backward.score)
            assert kept.score == pytest.approx(best)
            expected = forward.tokens if forward.score >= backward.score else backward.tokens[::-1]
            assert kept.tokens == expected
            chose_backward += kept.tokens != forward.tokens
    print(f"backward caption kept for {chose_backward} of 20 images")


def test_caption_bench_times_both_directions_of_a_twoway_bundle(twoway, tmp_path):
    """caption-bench measures a twoway bundle like any other; its decoder_step is one
    step of each direction, and it reads back as a results file."""
    import json

    from edgecap.benchmarks import bench

    out = tmp_path / "bench"
    bundle = twoway["root"] / "tflite-int8"
    argv = [str(bundle), "--data", str(twoway["e2e"]["data"]), "--out", str(out)]
    argv += ["--budget-s", "0.05", "--warmup", "1", "--quality-images", "8"]
    assert bench.main([*argv, "--cold-repeats", "1", "--seed-images", "1"]) == 0
    (entry,) = json.loads((out / "results.json").read_text())["bundles"]
    assert entry["status"] == "ok" and entry["variant"] == "tflite-int8"
    assert set(entry["size"]["files"]) >= {f"{name}.tflite" for name in DECODER_FILES}
    for name in ("encoder", "decoder_step", "caption_greedy", "caption_beam3"):
        assert entry["latency_ms"][name]["p50"] > 0, name
    assert entry["quality"]["beam3"]["images"] == 8


def test_scst_trains_both_directions_and_the_run_still_exports(twoway, tmp_path):
    """SCST of a twoway run: each direction samples and learns; the result is a twoway run
    whose greedy dev captions are scored every epoch and which exports like its parent."""
    import numpy as np

    from edgecap.export.exporter import export_bundle
    from edgecap.train.runs import load_run
    from edgecap.train.scst import ScstConfig, scst

    parent = twoway["root"] / "run"
    state = scst(parent, tmp_path / "scst", ScstConfig(epochs=1, samples=2, images_per_batch=64,
                                                       learning_rate=1e-3), progress=False)  # fmt: skip
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert state["history"][1]["train_reward"] > 0
    run = load_run(tmp_path / "scst")
    assert run.decoder_config.kind == "twoway"
    # The epoch's weights (last.npz, in the model's variable order) moved in both directions.
    variables = load_run(parent).decoder.variables
    with np.load(tmp_path / "scst" / "checkpoints" / "last.npz") as last:
        trained = [last[f"model/{index:05d}"] for index in range(len(variables))]
    moved = {v.path.split("/")[0] for v, w in zip(variables, trained, strict=True)
             if not np.array_equal(v.numpy(), w)}  # fmt: skip
    assert {"lstm", "backward_lstm", "logits", "backward_logits"} <= moved, moved
    manifest = export_bundle(tmp_path / "scst", tmp_path / "bundle", "fp32", parity_images=10)
    assert manifest["parity"]["identical_caption_rate"] == 1.0
