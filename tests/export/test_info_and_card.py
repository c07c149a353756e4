"""`edge_caption info`, --version, the model card, and a quiet plain run."""

import json

import pytest
from cli_helpers import edge_caption

from edgecap.edge_runtime import cli
from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.manifest import (
    Manifest,
    RecipeRecord,
    config_sha256,
    find_source_run,
)


def test_info_describes_the_bundle_and_its_model_card(e2e, capsys):
    assert cli.main(["info", str(e2e["bundle"])]) == 0
    out = capsys.readouterr().out
    assert "format      tflite, recipe tflite-int8" in out
    for role in ("encoder", "decoder_init", "decoder_step"):
        assert f"{role}.tflite" in out
    assert "decoder     lstm, 128 units, embedding 64" in out
    assert "parity      20 images against Keras" in out
    assert "dataset: edge-caption's synthetic shapes" in out
    assert "intended use:" in out and "licenses:" in out


def test_info_json_has_the_card_the_export_wrote(e2e, capsys):
    assert cli.main(["info", str(e2e["bundle"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    card = info["model_card"]
    assert card == e2e["manifest"]["model_card"]
    splits = json.loads((e2e["run"] / "config.json").read_text())
    assert set(card["training_data"]["images"]) == {"train", "dev", "test"}
    assert (
        card["bundle_metrics"]["identical_caption_rate"]
        == e2e["manifest"]["parity"]["identical_caption_rate"]
    )
    assert card["source_run_metrics"]["split"] == "test"
    assert info["total_bytes"] > sum(f["bytes"] for f in info["files"].values())
    assert splits  # the run's config is there for find_source_run below


def test_the_manifest_names_its_run_without_a_workstation_path(e2e):
    text = (e2e["bundle"] / "manifest.json").read_text()
    assert str(e2e["root"]) not in text
    raw = json.loads(text)
    config = json.loads((e2e["run"] / "config.json").read_text())
    assert raw["source"] == {"run": "run", "config_sha256": config_sha256(config)}
    assert find_source_run(e2e["bundle"], raw["source"]) == e2e["run"].resolve()
    # Another run of the same name is not taken for it.
    assert find_source_run(e2e["bundle"], {**raw["source"], "config_sha256": "0"}) is None


def test_the_manifest_is_one_typed_definition_written_and_read_back(e2e):
    """The exporter writes Manifest.to_json(); reading it back gives the same JSON, field
    for field, and the recipe the export used, so nothing has to infer it."""
    raw = json.loads((e2e["bundle"] / "manifest.json").read_text())
    manifest = Manifest.from_json(raw, e2e["bundle"])
    assert manifest.to_json() == raw
    assert manifest.recipe == RecipeRecord("tflite-int8", "tflite", "int8")
    assert manifest.models["decoder_step"].details["gpu_compatibility"]
    assert manifest.models["encoder"].bytes == (e2e["bundle"] / "encoder.tflite").stat().st_size
    legacy = {k: v for k, v in raw.items() if k != "source"} | {"source_run": "/old/run"}
    old = Manifest.from_json(legacy, e2e["bundle"])
    assert old.source == {"path": "/old/run"} and old.to_json() == legacy
    older = {**raw, "decoder": {k: v for k, v in raw["decoder"].items() if k != "length_penalty"}}
    assert Manifest.from_json(older, e2e["bundle"]).length_penalty == 0.0
    text = {**raw, "decoder": {**raw["decoder"], "length_penalty": "1"}}
    with pytest.raises(BundleError, match=r'decoder\.length_penalty: expected a number, got "1"'):
        Manifest.from_json(text, e2e["bundle"])
    wrong = {**raw, "recipe": {**raw["recipe"], "format": "onnx"}}
    with pytest.raises(
        BundleError, match=r"recipe: format 'onnx' is not the model_format 'tflite'"
    ):
        Manifest.from_json(wrong, e2e["bundle"])


def test_info_on_a_folder_without_a_manifest_says_so(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge_caption info: error: ")
    assert str(tmp_path) in err


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("edge_caption 0.")


def test_a_plain_run_prints_captions_without_backend_log_lines(e2e):
    image = sorted((e2e["data"] / "Flicker8k_Dataset").iterdir())[0]
    plain = edge_caption("--model", e2e["bundle"], "--source", image, check=True)
    assert "INFO:" not in plain.stderr, plain.stderr
    assert plain.stdout.startswith(str(image))
    verbose = edge_caption("--model", e2e["bundle"], "--source", image, "--verbose", check=True)
    assert verbose.stdout == plain.stdout
    assert "XNNPACK" in verbose.stderr  # LiteRT's own line, let through on request


def test_beam_search_uses_the_bundles_length_penalty_unless_told_otherwise(e2e, tmp_path):
    """caption-export records the length penalty chosen on dev; `edge_caption --beam 3`
    decodes with it, and --length-penalty overrides it."""
    import shutil

    from edgecap.edge_runtime.captioner import Captioner
    from edgecap.edge_runtime.decoding import DecodeOptions
    from edgecap.edge_runtime.evaluation.datasets import load_dataset

    tuned = tmp_path / "tuned"
    shutil.copytree(e2e["bundle"], tuned)
    raw = json.loads((tuned / "manifest.json").read_text())
    assert raw["decoder"]["length_penalty"] == 0.0  # the export's default
    raw["decoder"]["length_penalty"] = 3.0
    (tuned / "manifest.json").write_text(json.dumps(raw))
    dataset = load_dataset(e2e["data"])
    images = [dataset.image_path(i) for i in dataset.splits["test"][:12]]
    with Captioner.open(e2e["bundle"]) as plain, Captioner.open(tuned) as captioner:
        assert captioner.manifest.length_penalty == 3.0
        beam = DecodeOptions(beam_width=3)
        own = [captioner.caption(i, decode=beam).tokens for i in images]
        assert own == [plain.caption(i, decode=DecodeOptions(3, 3.0)).tokens for i in images]
        told = [captioner.caption(i, decode=DecodeOptions(3, 0.0)).tokens for i in images]
        assert told == [plain.caption(i, decode=beam).tokens for i in images]
        assert own != told  # a penalty of 3 favours longer captions on some of them
        told_text = [captioner.vocab.decode(t).split() for t in told]
    out = edge_caption("--model", tuned, "--source", images[0], "--beam", 3, "--length-penalty", 0)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{images[0]}\t{' '.join(told_text[0])}\n"
    assert "beam search length penalty 3" in edge_caption("info", tuned).stdout
