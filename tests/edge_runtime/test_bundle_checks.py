"""The runtime refuses a bad bundle before any inference, naming the file and the problem."""

import json
import shutil

import pytest

from edgecap.edge_runtime.atomic import sha256_file
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import BundleError


@pytest.fixture
def bundle(e2e, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], copy)
    return copy


def _edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_unknown_format_version(bundle):
    _edit_manifest(bundle, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="bundle format version 99 is not supported"):
        Captioner.open(bundle)


@pytest.mark.parametrize("name", ["../vocab.json", "/etc/passwd", "sub/../../x.json"])
def test_file_names_that_escape_the_bundle(bundle, name):
    _edit_manifest(bundle, lambda m: m["vocab"].update(file=name))
    with pytest.raises(BundleError, match="escapes the bundle folder"):
        Captioner.open(bundle)


def test_missing_model_file(bundle):
    (bundle / "encoder.tflite").unlink()
    with pytest.raises(
        BundleError, match=r"encoder\.tflite: file listed in the manifest is missing"
    ):
        Captioner.open(bundle)


def test_vocabulary_size_differs_from_manifest(bundle):
    vocab = json.loads((bundle / "vocab.json").read_text())
    vocab["tokens"].append("zebra")
    (bundle / "vocab.json").write_text(json.dumps(vocab))
    _edit_manifest(bundle, lambda m: m["vocab"].update(sha256=sha256_file(bundle / "vocab.json")))
    with pytest.raises(BundleError, match=r"vocabulary has \d+ words but the manifest says"):
        Captioner.open(bundle)


def test_tensor_names_that_disagree_with_the_manifest(bundle):
    def rename(m):
        m["models"]["decoder_step"]["inputs"][0]["name"] = "word"

    _edit_manifest(bundle, rename)
    with pytest.raises(BundleError, match=r"decoder_step: inputs are \['word', 'h', 'c'\]"):
        Captioner.open(bundle)


def test_truncated_model_with_matching_hash(bundle):
    """A file truncated before the manifest was written still fails to load, with its name."""
    data = (bundle / "decoder_init.tflite").read_bytes()
    (bundle / "decoder_init.tflite").write_bytes(data[:200])
    _edit_manifest(
        bundle,
        lambda m: m["models"]["decoder_init"].update(
            sha256=sha256_file(bundle / "decoder_init.tflite")
        ),
    )
    with pytest.raises(BundleError, match=r"decoder_init\.tflite: cannot load this TFLite model"):
        Captioner.open(bundle)
