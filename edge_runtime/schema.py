"""JSON <-> dataclasses, checked field by field from the type annotations.

The project's JSON contracts (manifest.json, a run's config.json, dataset files) are
dataclasses; `from_json` reads one and refuses anything that does not fit, naming the
file and the field path:

    manifest.json: decoder.length_penalty: expected a number, got "x"

Understood annotations: int, float (an int is accepted and kept as written, so a file
round-trips unchanged), str, bool, None, Optional / X | Y, Literal[...], list[X],
tuple[X, ...] / tuple[X, Y], dict[str, X], bare list / dict, Any, and nested dataclasses.
A field with a default may be missing. A dataclass that names one of its fields in
`__json_label__` is named by that field's value in paths, so an entry of a long list can be
found: `images[3] (d.jpg).sentences[0]`. Extra checks (ranges, safe file names) go in a
field's `check` (json_field) or in the dataclass's __post_init__: a ValueError raised by
either becomes the caller's error type with the same file and path in front of it.

Pure Python, no dependency: the device runtime imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, Union

from .errors import BundleError

__all__ = [
    "from_json",
    "to_json",
    "json_field",
    "describe",
    "gc_paused",
    "EXTRA_IGNORE",
    "EXTRA_REFUSE",
]

T = TypeVar("T")

# What a dataclass does with JSON keys it has no field for, set as a plain class
# attribute `__json_extra__`: ignore them (the default, so that older readers take newer
# files), refuse them (recipes, where a typo would silently do nothing), or the name of a
# dict field that collects them (kept, so a file round-trips).
EXTRA_IGNORE = "ignore"
EXTRA_REFUSE = "refuse"

_KEY = "json_key"
_CHECK = "json_check"
_KEEP_NONE = "json_keep_none"


def json_field(
    *,
    key: str | None = None,
    check: Callable[[Any], Any] | None = None,
    keep_none: bool = False,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with JSON options.

    key: its name in the JSON object when that differs from the attribute's.
    check: called with the decoded value; raises ValueError to refuse it, or returns the
        value to store (None: keep the value as decoded).
    keep_none: write a None value as null; by default a None whose field defaults to None
        is left out, as if absent.
    """
    metadata = {_KEY: key, _CHECK: check, _KEEP_NONE: keep_none}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def to_json(obj: Any) -> Any:
    """A dataclass (or list, dict of them) as JSON-ready data: fields in declaration
    order, under their JSON keys; None values of fields that default to None left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        extra_name = getattr(type(obj), "__json_extra__", EXTRA_IGNORE)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == extra_name:
                out.update({k: to_json(v) for k, v in value.items()})
                continue
            if value is None and f.default is None and not f.metadata.get(_KEEP_NONE):
                continue
            out[f.metadata.get(_KEY) or f.name] = to_json(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


def describe(annotation: Any) -> str:
    """What a value of this annotation is, in words: 'a number', 'a list of strings'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return "any value"
    if annotation is type(None) or annotation is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if origin is Union or origin is types.UnionType:
        options = [describe(a) for a in args if a is not type(None)]
        if len(options) < len(args):
            options.append("null")
        return " or ".join(options)
    if origin in (list, tuple) or annotation in (list, tuple):
        if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {_plural(args[0])}"
        if args:
            return f"a list of {len(args)} items"
        return "a list"
    if origin is dict or annotation is dict or dataclasses.is_dataclass(annotation):
        return "an object"
    return _NAMES.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _plural(annotation: Any) -> str:
    if annotation is bool:
        return "booleans"
    words = describe(annotation)
    for article in ("an ", "a "):
        if words.startswith(article):
            noun = words[len(article) :]
            return noun if " " in noun else noun + "s"
    return words


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON would write it, cut short: the user sees what the file holds."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


class _Refused(Exception):
    """A value that does not fit, on its way up to from_json, which names the file. Each
    reader it passes through adds its step of the path (innermost first), so a path is
    built only for a refusal, never for the hundreds of thousands of entries that fit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str | int | _Label] = []


class _Unsupported(_Refused):
    """An annotation from_json does not understand: a TypeError (a bug in the dataclass,
    not in the file), which a union does not catch to try its next option."""


class _Label(str):
    """A path step naming the entry just before it: images[3] (d.jpg)."""


def _path(base: str, steps: list[str | int | _Label]) -> str:
    path = base
    for step in reversed(steps):
        if isinstance(step, _Label):
            path = f"{path} ({step})" if path else f"({step})"
        else:
            path = _join(path, step)
    return path


def from_json(
    cls: type[T], obj: Any, source: str, *, error: type[Exception] = BundleError, path: str = ""
) -> T:
    """`obj` (decoded JSON) as a `cls`, every field checked against its annotation.

    source names the file in error messages; error is the exception raised (BundleError
    unless the caller reads something other than a bundle, e.g. DatasetError); path is
    where `obj` sits inside the file, for a caller that reads a part of it itself.
    """
    with gc_paused():  # what is read lives on, and so does `obj`
        return _read(_reader(cls, error), obj, source, error, path)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block that builds many objects that all live
    on (decoding a big JSON file, reading it into dataclasses): its full passes, one every
    few hundred thousand new objects and each over every object alive, free nothing there,
    and took most of the time of reading a Karpathy COCO file. Left as the caller had it;
    what the block drops is freed by reference counting all the same."""
    pause = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause:
            gc.enable()


def _read(read: Reader, obj: Any, source: str, error: type[Exception], path: str) -> Any:
    try:
        return read(obj)
    except _Unsupported as exc:
        where = _path(path, exc.steps) or "top"
        raise TypeError(f"schema: annotation {exc.message} at {where} is not supported") from None
    except _Refused as exc:
        where = _path(path, exc.steps)
        message = f"{source}: {where}: {exc.message}" if where else f"{source}: {exc.message}"
        raise error(message) from None


Reader = Callable[[Any], Any]

# One reader per (annotation, error type), made on first use: resolving type hints and
# dispatching on an annotation's shape happen once, not for each of a dataset file's
# hundreds of thousands of entries.
_READERS: dict[tuple[Any, type[Exception]], Reader] = {}


def _reader(annotation: Any, error: type[Exception]) -> Reader:
    try:
        return _READERS[annotation, error]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation: made each time
        return _make_reader(annotation, error)
    made = _READERS[annotation, error] = _make_reader(annotation, error)
    return made


def _mismatch(annotation: Any, value: Any) -> _Refused:
    return _Refused(f"expected {describe(annotation)}, got {_show(value)}")


# Annotations a value is checked against with one isinstance test; bool is an int in
# Python, so int and float refuse it explicitly.
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    str: lambda v: isinstance(v, str),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
}


def _make_reader(annotation: Any, error: type[Exception]) -> Reader:
    """A function that checks a decoded value against `annotation` and returns what to
    store, or raises _Refused."""
    scalar = _SCALARS.get(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if scalar is not None:
        fits = scalar
    elif annotation is Any or annotation is object:
        return lambda value: value
    elif annotation is type(None) or annotation is None:
        fits = lambda value: value is None  # noqa: E731
    elif origin is Literal:
        # `True == 1` in Python; a literal matches only a value of its own type.
        allowed = frozenset((type(a), a) for a in args)

        def fits(value: Any) -> bool:
            try:
                return (type(value), value) in allowed
            except TypeError:  # a list or an object is no literal
                return False

    elif origin is Union or origin is types.UnionType:
        return _union_reader(annotation, args, error)
    elif origin is list or annotation is list:
        return _list_reader(annotation, args[0] if args else Any, list, error)
    elif origin is tuple or annotation is tuple:
        return _tuple_reader(annotation, args, error)
    elif origin is dict or annotation is dict:
        read_item = _reader(args[1] if args else Any, error)

        def read_dict(value: Any) -> dict:
            if not isinstance(value, dict):
                raise _mismatch(annotation, value)
            key = None
            try:
                return {(key := k): read_item(v) for k, v in value.items()}
            except _Refused as exc:
                exc.steps.append(str(key))
                raise

        return read_dict
    elif dataclasses.is_dataclass(annotation):
        return _dataclass_reader(annotation, error)
    elif isinstance(annotation, type):
        fits = lambda value: isinstance(value, annotation)  # noqa: E731
    else:

        def unsupported(value: Any) -> Any:
            raise _Unsupported(repr(annotation))

        return unsupported

    def read(value: Any) -> Any:
        if not fits(value):
            raise _mismatch(annotation, value)
        return value

    return read


def _list_reader(annotation: Any, item: Any, kind: type, error: type[Exception]) -> Reader:
    read_item = _reader(item, error)
    exact = _exact(item)

    def read(value: Any) -> Any:
        if not isinstance(value, (list, tuple) if kind is tuple else list):
            raise _mismatch(annotation, value)
        out: list[Any] = []
        append = out.append
        try:
            for v in value:
                append(v if type(v) in exact else read_item(v))
        except _Refused as exc:
            exc.steps.append(len(out))  # the index of the item that did not fit
            raise
        return out if kind is list else tuple(out)

    return read


def _exact(annotation: Any) -> frozenset[type]:
    """The types whose values fit `annotation` as they are, without a reader's call: str,
    int, float, bool and None, alone or in a union (float is not int's: an int for a float
    goes through the reader)."""
    if annotation in (str, int, float, bool, None, type(None)):
        return frozenset({type(None) if annotation is None else annotation})
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        options = [_exact(a) for a in typing.get_args(annotation)]
        if all(options):
            return frozenset().union(*options)
    return frozenset()


def _tuple_reader(annotation: Any, args: tuple, error: type[Exception]) -> Reader:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        return _list_reader(annotation, args[0] if args else Any, tuple, error)
    readers = [_reader(a, error) for a in args]

    def read(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _mismatch(annotation, value)
        if len(value) != len(args):
            raise _Refused(f"expected a list of {len(args)} items, got {len(value)}")
        out: list[Any] = []
        try:
            for read_item, item in zip(readers, value, strict=True):
                out.append(read_item(item))
        except _Refused as exc:
            exc.steps.append(len(out))
            raise
        return tuple(out)

    return read


def _union_reader(annotation: Any, args: tuple, error: type[Exception]) -> Reader:
    nullable = type(None) in args
    options = [a for a in args if a is not type(None)]
    if len(options) == 1 and nullable:  # Optional[X]: X's message says more than "X or null"
        read_one = _reader(options[0], error)
        return lambda value: None if value is None else read_one(value)
    scalars = [_SCALARS.get(o) for o in options]
    readers = [None if s else _reader(o, error) for o, s in zip(options, scalars, strict=True)]

    def read(value: Any) -> Any:
        if value is None:
            if nullable:
                return None
            raise _mismatch(annotation, value)
        for fits, read_option in zip(scalars, readers, strict=True):
            if fits is not None:  # no refusal built and thrown away for each miss
                if fits(value):
                    return value
                continue
            try:
                return read_option(value)  # type: ignore[misc]
            except _Unsupported:
                raise
            except (_Refused, error):
                continue
        raise _mismatch(annotation, value)

    return read


class _Field(typing.NamedTuple):  # a tuple: unpacked into locals for each object read
    key: str  # the JSON key
    name: str  # the attribute
    read: Reader
    exact: frozenset[type]  # a value of one of these types fits as it is
    required: bool
    check: Callable[[Any], Any] | None


def _dataclass_reader(cls: type, error: type[Exception]) -> Reader:
    """A reader of `cls` from a JSON object. Its fields' readers are made on the first
    read, so that a dataclass may refer to itself or to one defined later."""
    extra_policy = getattr(cls, "__json_extra__", EXTRA_IGNORE)
    label = getattr(cls, "__json_label__", None)
    planned: tuple[tuple[_Field, ...], frozenset[str]] | None = None

    def plan() -> tuple[tuple[_Field, ...], frozenset[str]]:
        hints = typing.get_type_hints(cls)
        fields = tuple(
            _Field(
                key=f.metadata.get(_KEY) or f.name,
                name=f.name,
                read=_reader(hints[f.name], error),
                exact=_exact(hints[f.name]),
                required=f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING,
                check=f.metadata.get(_CHECK),
            )
            for f in dataclasses.fields(cls)
            if f.init and f.name != extra_policy
        )
        return fields, frozenset(f.key for f in fields)

    def read(value: Any) -> Any:
        nonlocal planned
        if not isinstance(value, dict):
            raise _mismatch(cls, value)
        if planned is None:
            planned = plan()
        fields, known = planned
        kwargs: dict[str, Any] = {}
        for key, name, read_field, exact, required, check in fields:
            if key not in value:
                if required:
                    raise _Refused(f"missing field {key!r}")
                continue
            item = value[key]
            try:
                if type(item) not in exact:
                    item = read_field(item)
                if check is not None:
                    try:
                        checked = check(item)
                    except ValueError as exc:
                        raise _Refused(str(exc)) from None
                    item = item if checked is None else checked
            except _Refused as exc:
                exc.steps.append(key)
                raise
            kwargs[name] = item
        if extra_policy != EXTRA_IGNORE:
            extra = {k: v for k, v in value.items() if k not in known}
            if extra_policy != EXTRA_REFUSE:
                kwargs[extra_policy] = extra
            elif extra:
                refused = _Refused(f"not a field; expected one of {', '.join(sorted(known))}")
                refused.steps.append(next(iter(extra)))
                raise refused
        try:
            return cls(**kwargs)
        except ValueError as exc:  # __post_init__'s checks across fields
            raise _Refused(str(exc)) from None

    if label is None:
        return read

    def read_labelled(value: Any) -> Any:
        try:
            return read(value)
        except _Refused as exc:
            name = value.get(label) if isinstance(value, dict) else None
            if isinstance(name, str) and name.strip():
                exc.steps.append(_Label(name))
            raise

    return read_labelled
