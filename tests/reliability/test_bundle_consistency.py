"""Bundles whose manifest disagrees with itself or with its files are refused before any
inference, with a message naming the file, the tensor and both numbers."""

import json
import shutil

import pytest

from edgecap.edge_runtime.atomic import sha256_file
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import BundleError

TAIL = "; the manifest disagrees with itself, re-export the bundle"


@pytest.fixture
def bundle(e2e, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], copy)
    return copy


def _tensor(manifest: dict, role: str, kind: str, name: str) -> dict:
    return next(t for t in manifest["models"][role][kind] if t["name"] == name)


def _image_64(m: dict) -> str:
    _tensor(m, "encoder", "inputs", "image")["shape"] = [1, 64, 64, 3]
    size = m["preprocessing"]["input_size"]
    return f"models.encoder: input 'image' has shape [1, 64, 64, 3], but preprocessing makes [1, {size}, {size}, 3]"


def _features_512(m: dict) -> str:
    _tensor(m, "decoder_init", "inputs", "features")["shape"] = [-1, 512]
    given = _tensor(m, "encoder", "outputs", "features")["shape"][-1]
    return (
        f"models.decoder_init: input 'features' has shape [-1, 512], but the encoder gives {given}"
    )


def _log_probs_one_more(m: dict) -> str:
    size = m["vocab"]["size"]
    _tensor(m, "decoder_step", "outputs", "log_probs")["shape"] = [-1, size + 1]
    return f"models.decoder_step: output 'log_probs' has shape [-1, {size + 1}], but the vocabulary has {size}"


def _state_h_halved(m: dict) -> str:
    h = _tensor(m, "decoder_init", "outputs", "h")["shape"]
    small = [-1, h[-1] // 2]
    _tensor(m, "decoder_step", "inputs", "h")["shape"] = small
    return f"models.decoder_step: input 'h' has shape {small}, but decoder_init gives {h}"


def _carried_c_halved(m: dict) -> str:
    c = _tensor(m, "decoder_step", "inputs", "c")["shape"]
    small = [-1, c[-1] // 2]
    _tensor(m, "decoder_step", "outputs", "c_next")["shape"] = small
    return f"models.decoder_step: output 'c_next' has shape {small}, but c is {c}"


@pytest.mark.parametrize(
    "edit", [_image_64, _features_512, _log_probs_one_more, _state_h_halved, _carried_c_halved]
)
def test_tensor_shapes_that_disagree_within_the_manifest(bundle, edit):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    expected = f"{path} {edit(manifest)}{TAIL}"
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        Captioner.open(bundle)
    assert str(caught.value) == expected


def test_tensor_without_a_shape(bundle):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    del _tensor(manifest, "decoder_init", "outputs", "h")["shape"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        Captioner.open(bundle)
    assert str(caught.value) == (
        f"{path} models.decoder_init: output 'h' needs a shape (a list of ints, -1 for a "
        "dynamic dimension), got None"
    )


def test_vocabulary_changed_after_export(bundle):
    vocab = json.loads((bundle / "vocab.json").read_text())
    vocab["tokens"][-1] = "zebra"
    (bundle / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(BundleError) as caught:
        Captioner.open(bundle)
    assert str(caught.value).startswith(f"{bundle / 'vocab.json'}: SHA-256 mismatch (manifest ")
    assert str(caught.value).endswith(
        "the file is truncated or was changed after export. Re-export or re-copy the bundle"
    )


def test_model_file_shapes_that_disagree_with_the_manifest(bundle):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["preprocessing"]["input_size"] = 64  # consistent with itself, not with the file
    _tensor(manifest, "encoder", "inputs", "image")["shape"] = [1, 64, 64, 3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        Captioner.open(bundle)  # refused before any inference
    assert str(caught.value) == (
        f"{bundle / 'encoder.tflite'}: input 'image' has shape [1, 96, 96, 3] in the file, but "
        "the manifest says [1, 64, 64, 3]; the bundle is inconsistent, re-export it"
    )


def test_sha256_recomputed_after_tampering_still_needs_a_consistent_manifest(bundle):
    """Fixing the hash of an edited manifest-listed file is not enough: the vocabulary
    size must still match the decoder's output."""
    vocab = json.loads((bundle / "vocab.json").read_text())
    vocab["tokens"].append("zebra")
    (bundle / "vocab.json").write_text(json.dumps(vocab))
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["vocab"].update(sha256=sha256_file(bundle / "vocab.json"), size=len(vocab["tokens"]))
    path.write_text(json.dumps(manifest))
    size = len(vocab["tokens"])
    with pytest.raises(BundleError) as caught:
        Captioner.open(bundle)
    assert str(caught.value) == (
        f"{path} models.decoder_step: output 'log_probs' has shape [-1, {size - 1}], but the "
        f"vocabulary has {size}{TAIL}"
    )
