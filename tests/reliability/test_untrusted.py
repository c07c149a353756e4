"""Untrusted files: no pickle anywhere, Keras loads in safe mode, and fuzzed manifests,
vocabularies and image bytes raise nothing but the project's own error types."""

import copy
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgecap.edge_runtime.errors import BundleError, ImageError
from edgecap.edge_runtime.manifest import parse_manifest
from edgecap.edge_runtime.preprocess import load_image
from edgecap.edge_runtime.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for d in ("train", "export", "edge_runtime", "benchmarks", "tests")
    for p in (REPO / d).rglob("*.py")
]
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def test_no_pickle_anywhere():
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib)\b|allow_pickle\s*=\s*True", re.M
    )
    offenders = [
        str(p) for p in SOURCES if p.name != "test_untrusted.py" and pattern.search(p.read_text())
    ]
    assert not offenders


def test_every_keras_load_uses_safe_mode():
    calls = [
        (p, m.group(0))
        for p in SOURCES
        for m in re.finditer(
            r"(?:models|saving)\.load_model\((?:[^()]|\([^()]*\))*\)", p.read_text()
        )
    ]
    assert calls, "expected some Keras loads to check"
    assert all("safe_mode=True" in call for _, call in calls), [
        c for c in calls if "safe_mode=True" not in c[1]
    ]


@pytest.fixture(scope="module")
def valid_manifest(e2e):
    return json.loads((e2e["bundle"] / "manifest.json").read_text())


@FUZZ
@given(obj=json_values)
def test_fuzzed_manifest_objects(obj, tmp_path):
    try:
        parse_manifest(obj, tmp_path)
    except BundleError:
        pass


@FUZZ
@given(path=st.lists(st.sampled_from(["models", "encoder", "decoder_step", "inputs", 0, "vocab", "decoder",
                                      "preprocessing", "file", "name", "size", "kind", "input_size"]),
                     min_size=1, max_size=4),
       value=json_values)  # fmt: skip
def test_mutated_valid_manifest(valid_manifest, path, value, tmp_path):
    """Replace one field, at any depth, of a real manifest with junk."""
    obj = copy.deepcopy(valid_manifest)
    node = obj
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    try:
        node[path[-1]] = value
    except (TypeError, IndexError):
        return
    try:
        parse_manifest(obj, tmp_path)
    except BundleError:
        pass


@FUZZ
@given(obj=json_values, tokens=st.lists(st.text(max_size=6) | st.integers(), max_size=8))
def test_fuzzed_vocabularies(obj, tokens):
    for candidate in (obj, {"format": "edgecap-vocab", "version": 1, "tokens": tokens}):
        try:
            vocab = Vocabulary.from_json(candidate)
        except BundleError:
            continue
        assert vocab.decode(range(len(vocab) + 3)) is not None


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg()


@FUZZ
@given(data=st.binary(max_size=256) | st.builds(lambda cut, junk: JPEG[:cut] + junk,
                                                 st.integers(0, len(JPEG)), st.binary(max_size=32)))  # fmt: skip
def test_fuzzed_image_bytes(data, tmp_path):
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageError:
        return
    assert image.mode == "RGB"
