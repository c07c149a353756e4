"""JSON <-> dataclasses, checked field by field from the type annotations.

The project's JSON contracts (manifest.json, a run's config.json, dataset files) are
dataclasses; `from_json` reads one and refuses anything that does not fit, naming the
file and the field path:

    manifest.json: decoder.length_penalty: expected a number, got "x"

Understood annotations: int, float (an int is accepted and kept as written, so a file
round-trips unchanged), str, bool, None, Optional / X | Y, Literal[...], list[X],
tuple[X, ...] / tuple[X, Y], dict[str, X], bare list / dict, Any, and nested dataclasses.
A field with a default may be missing. Extra checks (ranges, safe file names) go in a
field's `check` (json_field) or in the dataclass's __post_init__: a ValueError raised by
either becomes the caller's error type with the same file and path in front of it.

Pure Python, no dependency: the device runtime imports it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union

from .errors import BundleError

__all__ = ["from_json", "to_json", "json_field", "describe", "EXTRA_IGNORE", "EXTRA_REFUSE"]

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


def from_json(
    cls: type[T], obj: Any, source: str, *, error: type[Exception] = BundleError, path: str = ""
) -> T:
    """`obj` (decoded JSON) as a `cls`, every field checked against its annotation.

    source names the file in error messages; error is the exception raised (BundleError
    unless the caller reads something other than a bundle, e.g. DatasetError); path is
    where `obj` sits inside the file, for a caller that reads a part of it itself.
    """
    return _Reader(source, error).read(cls, obj, path)


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


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (strings under `from __future__ import
    annotations`), computed once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


class _Reader:
    def __init__(self, source: str, error: type[Exception]) -> None:
        self.source = source
        self.error = error

    def fail(self, path: str, message: str) -> Exception:
        where = f"{self.source}: {path}" if path else self.source
        return self.error(f"{where}: {message}")

    def mismatch(self, annotation: Any, value: Any, path: str) -> Exception:
        return self.fail(path, f"expected {describe(annotation)}, got {_show(value)}")

    def read(self, annotation: Any, value: Any, path: str) -> Any:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if annotation is Any or annotation is object:
            return value
        if annotation is type(None) or annotation is None:
            if value is not None:
                raise self.mismatch(annotation, value, path)
            return None
        if origin is Literal:
            # `True == 1` in Python; a literal matches only a value of its own type.
            if not any(value == a and type(value) is type(a) for a in args):
                raise self.mismatch(annotation, value, path)
            return value
        if origin is Union or origin is types.UnionType:
            return self.union(annotation, args, value, path)
        if annotation is bool:
            if not isinstance(value, bool):
                raise self.mismatch(annotation, value, path)
            return value
        if annotation is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.mismatch(annotation, value, path)
            return value
        if annotation is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.mismatch(annotation, value, path)
            return value
        if annotation is str:
            if not isinstance(value, str):
                raise self.mismatch(annotation, value, path)
            return value
        if origin is list or annotation is list:
            if not isinstance(value, list):
                raise self.mismatch(annotation, value, path)
            item = args[0] if args else Any
            return [self.read(item, v, _join(path, i)) for i, v in enumerate(value)]
        if origin is tuple or annotation is tuple:
            return self.fixed_or_variadic(annotation, args, value, path)
        if origin is dict or annotation is dict:
            if not isinstance(value, dict):
                raise self.mismatch(annotation, value, path)
            item = args[1] if args else Any
            return {k: self.read(item, v, _join(path, str(k))) for k, v in value.items()}
        if dataclasses.is_dataclass(annotation):
            return self.dataclass(annotation, value, path)
        if isinstance(annotation, type):
            if not isinstance(value, annotation):
                raise self.mismatch(annotation, value, path)
            return value
        raise TypeError(f"schema: annotation {annotation!r} at {path or 'top'} is not supported")

    def union(self, annotation: Any, args: tuple, value: Any, path: str) -> Any:
        if value is None:
            if type(None) in args:
                return None
            raise self.mismatch(annotation, value, path)
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message says more than "X or null"
            return self.read(options[0], value, path)
        for option in options:
            try:
                return self.read(option, value, path)
            except self.error:
                continue
        raise self.mismatch(annotation, value, path)

    def fixed_or_variadic(self, annotation: Any, args: tuple, value: Any, path: str) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise self.mismatch(annotation, value, path)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(self.read(item, v, _join(path, i)) for i, v in enumerate(value))
        if len(value) != len(args):
            raise self.fail(path, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(
            self.read(a, v, _join(path, i))
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )

    def dataclass(self, cls: type, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.mismatch(cls, value, path)
        hints = _hints(cls)
        extra_policy = getattr(cls, "__json_extra__", EXTRA_IGNORE)
        kwargs: dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):
            if not f.init or f.name == extra_policy:
                continue
            key = f.metadata.get(_KEY) or f.name
            known.add(key)
            where = _join(path, key)
            if key not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise self.fail(path, f"missing field {key!r}")
                continue
            item = self.read(hints[f.name], value[key], where)
            check = f.metadata.get(_CHECK)
            if check is not None:
                try:
                    checked = check(item)
                except ValueError as exc:
                    raise self.fail(where, str(exc)) from None
                item = item if checked is None else checked
            kwargs[f.name] = item
        extra = {k: v for k, v in value.items() if k not in known}
        if extra and extra_policy == EXTRA_REFUSE:
            allowed = ", ".join(sorted(known))
            raise self.fail(
                _join(path, next(iter(extra))), f"not a field; expected one of {allowed}"
            )
        if extra_policy not in (EXTRA_IGNORE, EXTRA_REFUSE):
            kwargs[extra_policy] = extra
        try:
            return cls(**kwargs)
        except ValueError as exc:  # __post_init__'s checks across fields
            raise self.fail(path, str(exc)) from None
