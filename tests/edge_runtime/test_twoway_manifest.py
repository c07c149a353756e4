"""A twoway manifest (decoder kind twoway: a left-to-right and a right-to-left LSTM) holds a
second decoder pair, decoder_init_backward and decoder_step_backward; the runtime reads it
and refuses one whose backward pair is missing or disagrees, naming the file and the field.
Built from the shipped LSTM bundle's manifest, whose pair has the same tensors."""

import copy
import json
from pathlib import Path

import pytest

from edgecap.edge_runtime.builtin import DEFAULT_MODEL, MODELS_DIR
from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.manifest import load_manifest, model_roles, parse_manifest

LSTM_BUNDLE = MODELS_DIR / DEFAULT_MODEL  # the shipped LSTM bundle


def _twoway_manifest() -> dict:
    manifest = json.loads((LSTM_BUNDLE / "manifest.json").read_text())
    manifest["decoder"]["kind"] = "twoway"
    for role in ("decoder_init", "decoder_step"):
        backward = copy.deepcopy(manifest["models"][role])
        backward["file"] = f"{role}_backward.tflite"
        manifest["models"][f"{role}_backward"] = backward
    return manifest


def _write(folder: Path, manifest: dict) -> Path:
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def test_a_twoway_manifest_lists_both_pairs():
    assert model_roles("twoway") == ("encoder", "decoder_init", "decoder_step",
                                     "decoder_init_backward", "decoder_step_backward")  # fmt: skip
    assert model_roles("lstm") == ("encoder", "decoder_init", "decoder_step")
    manifest = parse_manifest(_twoway_manifest(), LSTM_BUNDLE)
    assert manifest.decoder_kind == "twoway"
    assert list(manifest.models) == list(model_roles("twoway"))
    assert manifest.to_json()["models"]["decoder_step_backward"]["file"] == (
        "decoder_step_backward.tflite"
    )


def test_a_twoway_manifest_without_its_backward_step_is_refused(tmp_path):
    manifest = _twoway_manifest()
    del manifest["models"]["decoder_step_backward"]
    path = _write(tmp_path, manifest)
    with pytest.raises(BundleError) as refused:
        load_manifest(tmp_path, verify_hashes=False)
    assert str(path) in str(refused.value)
    assert "missing field 'decoder_step_backward'" in str(refused.value)


def test_a_backward_pair_with_other_tensor_names_is_refused(tmp_path):
    manifest = _twoway_manifest()
    manifest["models"]["decoder_init_backward"]["outputs"][0]["name"] = "h0"
    path = _write(tmp_path, manifest)
    with pytest.raises(
        BundleError, match=r"models\.decoder_init_backward: outputs are \['h0', 'c'\]"
    ):
        load_manifest(tmp_path, verify_hashes=False)
    with pytest.raises(BundleError, match=str(path)):
        load_manifest(tmp_path, verify_hashes=False)


def test_a_backward_step_for_another_vocabulary_is_refused(tmp_path):
    manifest = _twoway_manifest()
    log_probs = manifest["models"]["decoder_step_backward"]["outputs"][0]
    log_probs["shape"] = [-1, log_probs["shape"][1] + 1]
    _write(tmp_path, manifest)
    with pytest.raises(
        BundleError, match=r"models\.decoder_step_backward: output 'log_probs' has shape"
    ):
        load_manifest(tmp_path, verify_hashes=False)


def test_a_backward_state_that_does_not_fit_its_step_is_refused(tmp_path):
    manifest = _twoway_manifest()
    manifest["models"]["decoder_init_backward"]["outputs"][0]["shape"] = [-1, 256]  # h
    _write(tmp_path, manifest)
    with pytest.raises(
        BundleError,
        match=r"models\.decoder_step_backward: input 'h' has shape \[-1, 512\], but "
        r"decoder_init_backward gives \[-1, 256\]",
    ):
        load_manifest(tmp_path, verify_hashes=False)
