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

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import BundleError, ImageError
from edgecap.edge_runtime.manifest import load_manifest, parse_manifest
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


# JSON texts a hostile bundle could ship: junk bytes, any JSON value, nesting deep enough to
# exhaust Python's recursion limit, and integers past its 4300-digit conversion limit.
json_files = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 2000).map(lambda n: b"[" * (n * 50) + b"]" * (n * 50)),
    st.integers(4301, 6000).map(lambda n: b'{"tokens": ' + b"7" * n + b"}"),
)


@FUZZ
@given(data=json_files)
def test_fuzzed_manifest_files(data, tmp_path):
    (tmp_path / "manifest.json").write_bytes(data)
    try:
        load_manifest(tmp_path)
    except BundleError as exc:
        assert str(exc).startswith(str(tmp_path))


@FUZZ
@given(data=json_files)
def test_fuzzed_vocabulary_files(data, tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(data)
    try:
        Vocabulary.load(path)
    except BundleError as exc:
        assert str(exc).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "data", [b"[" * 100_000, b"1" * 5000], ids=["nested-100000-deep", "5000-digit-integer"]
)
def test_hostile_json_is_refused_as_invalid_not_a_crash(data, tmp_path):
    """Both used to escape as RecursionError / ValueError instead of a BundleError."""
    (tmp_path / "manifest.json").write_bytes(data)
    with pytest.raises(BundleError, match=r"manifest\.json: manifest is not valid JSON \("):
        load_manifest(tmp_path)
    (tmp_path / "vocab.json").write_bytes(data)
    with pytest.raises(BundleError, match=r"vocab\.json: vocabulary is not valid JSON \("):
        Vocabulary.load(tmp_path / "vocab.json")


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(buf, format=fmt)
    return buf.getvalue()


# A valid file of each format PIL may be handed, to be cut, bit-flipped and padded.
IMAGE_SEEDS = [_encoded(fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")]


def _mutate(seed: bytes, cut: int, flips: list[tuple[int, int]], junk: bytes) -> bytes:
    data = bytearray(seed[:cut])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data) + junk


image_files = st.binary(max_size=256) | st.builds(
    _mutate,
    st.sampled_from(IMAGE_SEEDS),
    st.integers(0, max(map(len, IMAGE_SEEDS))),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    st.binary(max_size=32),
)


# PIL warns about the damage it skips over (e.g. "Truncated File Read"); that is expected.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@FUZZ
@given(data=image_files)
def test_fuzzed_image_bytes(data, tmp_path):
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0


@pytest.fixture(scope="module")
def captioner(e2e):
    with Captioner.open(e2e["bundle"]) as captioner:
        yield captioner


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@FUZZ
@given(data=image_files)
def test_fuzzed_image_bytes_through_the_captioner(captioner, data, tmp_path):
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    try:
        result = captioner.caption(path)
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert isinstance(result.text, str) and isinstance(result.tokens, list)
