"""edge_runtime/schema.py: every annotation it understands, and the exact message of each
refusal (file, field path, what was expected, what the file holds)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from edgecap.edge_runtime.errors import BundleError, DatasetError
from edgecap.edge_runtime.schema import (
    EXTRA_REFUSE,
    describe,
    from_json,
    json_field,
    to_json,
)


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError(f"must be positive, got {value}")


@dataclass(frozen=True)
class Decoder:
    kind: Literal["lstm", "merge"]
    length_penalty: float = 0.0
    units: int | None = None
    layers: int = json_field(default=1, check=_positive)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: list[int]


@dataclass(frozen=True)
class Top:
    name: str
    decoder: Decoder
    max_length: int = json_field(key="max_caption_length")
    tensors: list[Tensor] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    pair: tuple[int, str] | None = None
    beams: tuple[int, ...] = ()
    quantized: bool = False
    note: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    __json_extra__ = "extra"

    def __post_init__(self) -> None:
        if self.max_length > 200:
            raise ValueError(f"max_caption_length {self.max_length} is out of range")


@dataclass
class Strict:
    epochs: int = 1

    __json_extra__ = EXTRA_REFUSE


GOOD = {"name": "m", "decoder": {"kind": "lstm"}, "max_caption_length": 20}


def _refusal(obj: Any, cls: type = Top, error: type[Exception] = BundleError) -> str:
    with pytest.raises(error) as info:
        from_json(cls, obj, "manifest.json", error=error)
    return str(info.value)


def test_reads_defaults_and_renamed_keys():
    top = from_json(Top, GOOD, "manifest.json")
    assert top == Top(name="m", decoder=Decoder(kind="lstm"), max_length=20)
    assert top.decoder.layers == 1 and top.tensors == [] and top.pair is None


def test_reads_every_supported_annotation():
    obj = {
        **GOOD,
        "decoder": {"kind": "merge", "length_penalty": 1, "units": 8, "layers": 2},
        "tensors": [{"name": "image", "shape": [1, 224, 224, 3]}],
        "sizes": {"a": 1},
        "pair": [3, "x"],
        "beams": [1, 3],
        "quantized": True,
        "note": {"anything": [1]},
        "future": "kept",
    }
    top = from_json(Top, obj, "manifest.json")
    assert top.decoder == Decoder(kind="merge", length_penalty=1, units=8, layers=2)
    assert top.tensors == [Tensor("image", [1, 224, 224, 3])]
    assert top.pair == (3, "x") and top.beams == (1, 3) and top.quantized is True
    assert top.extra == {"future": "kept"}
    # An int given for a float is kept as written, so the file round-trips byte for byte.
    assert json.dumps(to_json(top)) == json.dumps(obj)


def test_to_json_leaves_out_none_of_optional_fields_and_uses_json_keys():
    top = Top(name="m", decoder=Decoder(kind="lstm"), max_length=20)
    assert to_json(top) == {
        "name": "m",
        "decoder": {"kind": "lstm", "length_penalty": 0.0, "layers": 1},
        "max_caption_length": 20,
        "tensors": [],
        "sizes": {},
        "beams": [],
        "quantized": False,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decoder": {"kind": "lstm", "length_penalty": "x"}},
         'manifest.json: decoder.length_penalty: expected a number, got "x"'),
        ({"decoder": {"kind": "lstm", "length_penalty": True}},
         "manifest.json: decoder.length_penalty: expected a number, got true"),
        ({"decoder": {"kind": "gru"}},
         'manifest.json: decoder.kind: expected one of "lstm", "merge", got "gru"'),
        ({"decoder": {"kind": "lstm", "units": 1.5}},
         "manifest.json: decoder.units: expected an integer, got 1.5"),
        ({"decoder": {"kind": "lstm", "units": False}},
         "manifest.json: decoder.units: expected an integer, got false"),
        ({"decoder": {"kind": "lstm", "layers": 0}},
         "manifest.json: decoder.layers: must be positive, got 0"),
        ({"decoder": {}}, "manifest.json: decoder: missing field 'kind'"),
        ({"decoder": [1]}, "manifest.json: decoder: expected an object, got [1]"),
        ({"name": None}, "manifest.json: name: expected a string, got null"),
        ({"max_caption_length": 201}, "manifest.json: max_caption_length 201 is out of range"),
        ({"tensors": [{"name": "a", "shape": [1, "b"]}]},
         'manifest.json: tensors[0].shape[1]: expected an integer, got "b"'),
        ({"tensors": {"name": "a"}},
         'manifest.json: tensors: expected a list of objects, got {"name": "a"}'),
        ({"sizes": {"a": "1"}}, 'manifest.json: sizes.a: expected an integer, got "1"'),
        ({"pair": [3]}, "manifest.json: pair: expected a list of 2 items, got 1"),
        ({"pair": "ab"}, 'manifest.json: pair: expected a list of 2 items, got "ab"'),
        ({"beams": [1, None]}, "manifest.json: beams[1]: expected an integer, got null"),
        ({"quantized": 1}, "manifest.json: quantized: expected true or false, got 1"),
    ],
)  # fmt: skip
def test_refusals_name_the_file_and_the_field(change, message):
    assert _refusal({**GOOD, **change}) == message


def test_missing_top_level_field_and_non_object():
    assert _refusal({"name": "m"}) == "manifest.json: missing field 'decoder'"
    assert _refusal([1, 2]) == "manifest.json: expected an object, got [1, 2]"


def test_long_values_are_cut_short_in_messages():
    message = _refusal({**GOOD, "max_caption_length": "y" * 100})
    assert message == 'manifest.json: max_caption_length: expected an integer, got "' + (
        "y" * 56 + "..."
    )


def test_unknown_fields_refused_where_the_class_says_so():
    assert from_json(Strict, {"epochs": 3}, "run.json") == Strict(epochs=3)
    assert _refusal({"epoch": 3}, Strict) == (
        "manifest.json: epoch: not a field; expected one of epochs"
    )


def test_the_caller_chooses_the_error_type_and_the_path_prefix():
    assert _refusal({"epochs": "3"}, Strict, DatasetError) == (
        'manifest.json: epochs: expected an integer, got "3"'
    )
    with pytest.raises(DatasetError) as info:
        from_json(Strict, {"epochs": "3"}, "f.json", error=DatasetError, path="train")
    assert str(info.value) == 'f.json: train.epochs: expected an integer, got "3"'


def test_describe():
    assert describe(list[str]) == "a list of strings"
    assert describe(dict[str, int]) == "an object"
    assert describe(float | None) == "a number or null"
    assert describe(int | str) == "an integer or a string"
    assert describe(list[bool]) == "a list of booleans"


@dataclass
class Sentence:
    raw: str


@dataclass
class Image:
    filename: str
    sentences: list[Sentence]

    __json_label__ = "filename"


@dataclass
class Images:
    images: list[Image]


def test_a_labelled_entry_is_named_by_its_label_in_paths():
    good = {"filename": "a.jpg", "sentences": [{"raw": "a dog"}]}
    bad = {"filename": "b.jpg", "sentences": [{"raw": "a cat"}, {"tokens": []}]}
    assert _refusal({"images": [good, bad]}, Images) == (
        "manifest.json: images[1] (b.jpg).sentences[1]: missing field 'raw'"
    )
    # No label where the entry has none to give; at the top, the label alone.
    assert _refusal({"images": [{"sentences": []}]}, Images) == (
        "manifest.json: images[0]: missing field 'filename'"
    )
    assert _refusal({"filename": "c.jpg", "sentences": 1}, Image) == (
        "manifest.json: (c.jpg).sentences: expected a list of objects, got 1"
    )


def test_an_unsupported_annotation_is_a_type_error_naming_where():
    @dataclass
    class Odd:
        when: set[int] | None = None

    assert from_json(Odd, {}, "x.json") == Odd()
    with pytest.raises(TypeError, match=r"annotation set\[int\] at a\.when is not supported"):
        from_json(Odd, {"when": 1}, "x.json", path="a")


def test_the_garbage_collector_is_as_the_caller_left_it():
    import gc

    from_json(Top, GOOD, "manifest.json")
    _refusal({"name": "m"})
    assert gc.isenabled()
    gc.disable()
    try:
        from_json(Top, GOOD, "manifest.json")
        assert not gc.isenabled()
    finally:
        gc.enable()
