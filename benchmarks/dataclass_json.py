"""Dataclasses to and from JSON, driven by their fields and type hints.

Two field options (dataclasses.field(metadata=...)) keep the results files' layout:
OMIT_NONE leaves the key out while the value is None (a failed bundle has no cold start);
FLATTEN writes a nested dataclass's keys into its parent (a bundle's measurement sits
beside its name and status) and reads it back where its required keys are present.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from edgecap.edge_runtime.errors import EdgeCaptionError

T = TypeVar("T")
OMIT_NONE = {"omit_none": True}
FLATTEN = {"flatten": True, "omit_none": True}


class SchemaError(EdgeCaptionError):
    """A JSON value does not fit the dataclass it is read into."""


def to_json(obj: Any) -> Any:
    """A dataclass (or a dict, list or value holding them) as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("flatten"):
                out.update(to_json(value))
            else:
                out[f.name] = to_json(value)
        return out
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    return obj


def from_json(cls: type[T], obj: Any, source: str) -> T:
    """`obj` read into `cls`; SchemaError names `source` and the key path that is wrong."""
    return _read(cls, obj, source)


def _required(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _read(tp: Any, obj: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return obj
    if origin in (typing.Union, types.UnionType):
        if obj is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return _read(arm, obj, where)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(errors[0] if len(errors) == 1 else f"{where}: {obj!r} fits no type")
    if dataclasses.is_dataclass(tp):
        if not isinstance(obj, dict):
            raise SchemaError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        values = {}
        for f in dataclasses.fields(tp):
            hint = hints[f.name]
            if f.metadata.get("flatten"):
                nested = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
                if all(name in obj for name in _required(nested)):
                    values[f.name] = _read(nested, obj, where)
            elif f.name in obj:
                values[f.name] = _read(hint, obj[f.name], f"{where}: {f.name}")
        missing = [name for name in _required(tp) if name not in values]
        if missing:
            raise SchemaError(f"{where}: lacks {', '.join(missing)}")
        return tp(**values)
    if origin is list or origin is tuple:
        if not isinstance(obj, list):
            raise SchemaError(f"{where}: expected a list")
        item = args[0] if args else Any
        items = [_read(item, v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(obj, dict):
            raise SchemaError(f"{where}: expected an object")
        return {k: _read(args[1] if args else Any, v, f"{where}: {k}") for k, v in obj.items()}
    if tp is float and isinstance(obj, int | float) and not isinstance(obj, bool):
        return obj
    if isinstance(tp, type) and isinstance(obj, tp):
        return obj
    raise SchemaError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {obj!r}")
