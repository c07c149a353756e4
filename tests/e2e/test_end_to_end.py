"""synthetic scenes -> trained run -> int8 TFLite bundle -> edge_caption, on a small scale."""

import json
import shutil

import numpy as np
import pytest
from cli_helpers import copy_with_half_a_file, edge_caption
from PIL import Image

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.evaluation.datasets import load_dataset
from edgecap.edge_runtime.evaluation.scenes import load_scenes, parse_caption, scene_accuracy
from edgecap.train.checkpoint import read_history, saved_steps


def test_run_directory_and_keras_evaluation(e2e):
    run = e2e["run"]
    for name in (
        "config.json",
        "vocab.json",
        "encoder.keras",
        "decoder.keras",
        "metrics.json",
        "checkpoints/last.npz",
    ):
        assert (run / name).is_file(), name
    history = read_history(run / "checkpoints")
    steps = saved_steps(run / "checkpoints", "optimizer")  # what the model says is done
    assert [h["epoch"] for h in history] == list(range(1, 26)) and steps % 25 == 0 < steps
    assert e2e["metrics"]["images"] == 200 and 0 <= e2e["metrics"]["bleu4"] <= 1


def test_bundle_follows_the_contract(e2e):
    manifest = json.loads((e2e["bundle"] / "manifest.json").read_text())
    assert manifest["format"] == "edgecap-bundle" and manifest["model_format"] == "tflite"
    files = sorted(p.name for p in e2e["bundle"].iterdir())
    assert files == [
        "decoder_init.tflite",
        "decoder_step.tflite",
        "encoder.tflite",
        "manifest.json",
        "vocab.json",
    ]
    models = manifest["models"]
    assert models["encoder"]["precision"] == "int8"
    assert models["encoder"]["inputs"][0]["dtype"] == "int8"  # full-integer, quantized input
    assert models["decoder_step"]["precision"] == "dynamic"
    assert [t["name"] for t in models["decoder_step"]["inputs"]] == ["token", "h", "c"]
    assert manifest["parity"]["images"] == 20


def test_no_flex_ops_in_any_file(e2e):
    from edgecap.export.tflite import op_names

    for name in ("encoder", "decoder_init", "decoder_step"):
        ops = op_names((e2e["bundle"] / f"{name}.tflite").read_bytes())
        assert ops and not [op for op in ops if op.startswith("Flex") or not op.isupper()], (
            name,
            ops,
        )
    assert "CONV_2D" in op_names((e2e["bundle"] / "encoder.tflite").read_bytes())


def test_edge_caption_cli_on_image_folder_and_video(e2e, tmp_path):
    import cv2

    dataset = load_dataset(e2e["data"])
    scenes = load_scenes(e2e["data"])
    test_ids = dataset.splits["test"]
    image = dataset.image_path(test_ids[0])
    out = edge_caption("--model", e2e["bundle"], "--source", image, check=True).stdout.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{image}\t")

    folder = tmp_path / "images"
    folder.mkdir()
    for i in test_ids:
        shutil.copyfile(dataset.image_path(i), folder / i)
    rows = edge_caption(
        "--model", e2e["bundle"], "--source", folder, "--jsonl", check=True
    ).stdout.splitlines()
    records = [json.loads(r) for r in rows]
    assert len(records) == len(test_ids)
    assert all(set(r) == {"source", "caption", "ms"} for r in records)
    predictions = {r["source"].rsplit("/", 1)[1]: r["caption"] for r in records}
    # A decoder trained for a minute on 1200 images names most scenes exactly.
    assert scene_accuracy(predictions, scenes) >= 0.5

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 96))
    for i in test_ids[:3]:
        frame = np.asarray(Image.open(dataset.image_path(i)).convert("RGB"))[
            ..., ::-1
        ]  # RGB -> BGR
        for _ in range(5):
            writer.write(np.ascontiguousarray(frame))
    writer.release()
    lines = edge_caption(
        "--model", e2e["bundle"], "--source", video, "--every", 5, check=True
    ).stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{video}#frame={n}" for n in (0, 5, 10)]
    # Frames went through BGR -> RGB: they name the scenes of the stills they came from
    # (mp4 is lossy, so the paraphrase may differ).
    still = [parse_caption(predictions[i]) for i in test_ids[:3]]
    framed = [parse_caption(line.split("\t")[1]) for line in lines]
    assert sum(f == s for f, s in zip(framed, still, strict=True)) >= 2, (framed, still)
    print("e2e scene accuracy through edge_caption:", scene_accuracy(predictions, scenes))


def test_python_api_takes_paths_arrays_and_pil_images(e2e):
    dataset = load_dataset(e2e["data"])
    path = dataset.image_path(dataset.splits["test"][0])
    with Captioner.open(e2e["bundle"]) as captioner:
        from_path = captioner.caption(path)
        rgb = np.asarray(Image.open(path).convert("RGB"))
        from_array = captioner.caption(rgb)
        from_bgr = captioner.caption(rgb[..., ::-1], bgr=True)
        from_pil = captioner.caption(Image.open(path))
    assert from_path.text == from_array.text == from_bgr.text == from_pil.text
    assert from_path.tokens and from_path.score < 0
    assert set(from_path.timings_ms) == {"preprocess", "encoder", "decoder", "total"}
    with pytest.raises(RuntimeError, match="closed"):
        captioner.caption(path)
    # Beam search steps the same bundle with a batch of up to 3 hypotheses.
    with Captioner.open(e2e["bundle"], decode=DecodeOptions(beam_width=3)) as captioner:
        beamed = captioner.caption(path)
    assert beamed.tokens and beamed.text.split()[0] in {"a", "there", "an"}


def test_bundle_with_changed_file_is_refused(e2e, tmp_path):
    copy = copy_with_half_a_file(e2e["bundle"], tmp_path, "decoder_step.tflite")
    with pytest.raises(BundleError, match=r"decoder_step\.tflite: SHA-256 mismatch"):
        Captioner.open(copy)
    result = edge_caption("--model", copy, "--source", copy / "vocab.json")
    assert result.returncode == 2 and "SHA-256 mismatch" in result.stderr


def test_int8_bundle_agrees_with_keras(e2e):
    parity = e2e["manifest"]["parity"]
    assert parity["identical_caption_rate"] >= 0.8, parity
    keras_predictions = [
        json.loads(line) for line in (e2e["run"] / "predictions.jsonl").read_text().splitlines()
    ]
    assert [p["image"] for p in keras_predictions] == load_dataset(e2e["data"]).splits["test"]


def test_the_positional_step_gives_the_named_steps_arrays_exactly(e2e):
    """TFLite steps run positionally (no dicts between invokes); the arrays are the ones
    the named call gives, at batch 1 and at a beam's batch 3, and after a change of batch."""
    from edgecap.edge_runtime.bundle import Bundle
    from edgecap.edge_runtime.step_models import RecurrentStepModel

    with Bundle.open(e2e["bundle"]) as bundle:
        fast = bundle.step_model
        assert fast._run is not None
        init, step = bundle._models["decoder_init"], bundle._models["decoder_step"]
        named = RecurrentStepModel("lstm", init, lambda **inputs: step(**inputs))
        assert named._run is None
        rng = np.random.default_rng(0)
        for batch in (1, 3, 1, 3):
            features = rng.normal(size=(batch, e2e["manifest"]["encoder"]["feature_dim"]))
            state = fast.init(features.astype(np.float32))
            tokens = rng.integers(3, e2e["manifest"]["vocab"]["size"], size=batch)
            for _ in range(3):
                log_probs, next_state = fast.step(tokens, state)
                expected, expected_state = named.step(tokens, state)
                np.testing.assert_array_equal(log_probs, expected)
                for got, want in zip(next_state, expected_state, strict=True):
                    np.testing.assert_array_equal(got, want)
                state, tokens = next_state, log_probs.argmax(axis=1)
