"""Untrusted files: no pickle anywhere, Keras loads in safe mode, and fuzzed manifests,
vocabularies and image bytes raise nothing but the project's own error types."""

import copy
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import BundleError, ImageError
from edgecap.edge_runtime.manifest import MODEL_ROLES, load_manifest, parse_manifest
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


# Hostile values for the manifest's file-name and number fields: what a hand-edited or
# malicious manifest.json can hold (json.dumps writes NaN and Infinity, json.loads reads them).
hostile_names = st.one_of(
    st.text(st.characters(blacklist_categories=()), min_size=1, max_size=300),  # surrogates too
    st.sampled_from(["v" * 256 + ".json", "vocab\x00.json", "voc\ud800.json", "sub/vocab.json",
                     "sub\\vocab.json", ".", "..", "/etc/passwd", "vocab.json/", "\n", " "]),
)  # fmt: skip
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, -0.0, 1e308, -1e308, 5e-324, 2**31, 2**63, 10.000001, -10.5]),
    st.booleans(),
)
NAME_FIELDS = [("vocab", "file"), *(("models", role, "file") for role in MODEL_ROLES)]
NUMBER_FIELDS = [
    ("preprocessing", "input_size"), ("preprocessing", "scale"), ("preprocessing", "offset"),
    ("preprocessing", "reducing_gap"), ("decoder", "length_penalty"), ("decoder", "units"),
    ("max_caption_length",), ("vocab", "size"), ("vocab", "start_id"), ("vocab", "end_id"),
    ("vocab", "pad_id"), ("vocab", "unk_id"), *(("models", role, "bytes") for role in MODEL_ROLES),
]  # fmt: skip


@pytest.fixture(scope="module")
def bundle_copy(e2e, tmp_path_factory):
    copy = tmp_path_factory.mktemp("hostile") / "bundle"
    shutil.copytree(e2e["bundle"], copy)
    return copy


def _open_with_field(bundle: Path, original: dict, keys: tuple, value) -> None:
    """Open (and caption with, greedy and beam 3) the bundle whose manifest has `value` at
    `keys`: a caption or a BundleError naming the manifest or a file of the bundle."""
    obj = copy.deepcopy(original)
    node = obj
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (bundle / "manifest.json").write_text(json.dumps(obj))
    try:
        with Captioner.open(bundle) as captioner:
            image = np.zeros((40, 56, 3), np.uint8)
            captioner.caption(image)
            captioner.caption(image, decode=DecodeOptions(beam_width=3))
    except BundleError as exc:
        assert str(exc).startswith(str(bundle)), exc


@FUZZ
@given(keys=st.sampled_from(NAME_FIELDS), name=hostile_names)
def test_hostile_file_names_in_the_manifest(bundle_copy, valid_manifest, keys, name):
    """Names too long, with NUL or lone surrogates, separators, dots: each used to reach
    is_file() or resolve() and end there in OSError or ValueError."""
    _open_with_field(bundle_copy, valid_manifest, keys, name)


@FUZZ
@given(keys=st.sampled_from(NUMBER_FIELDS), number=hostile_numbers)
def test_hostile_numbers_in_the_manifest(bundle_copy, valid_manifest, keys, number):
    """NaN, +-Infinity, huge and negative values in every number field the runtime reads:
    input_size = Infinity was an OverflowError, a length penalty of 400 an OverflowError in
    beam search, NaN scale or offset captioned garbage with exit 0."""
    _open_with_field(bundle_copy, valid_manifest, keys, number)
