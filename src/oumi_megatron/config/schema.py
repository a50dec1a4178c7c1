"""Unknown-key detection over a raw config tree, for Oumi dataclasses and our models alike.

OmegaConf already rejects unknown keys in Oumi's dataclasses and pydantic in ours, but
with different, hint-less messages; walking the tree once before building anything gives
every typo the same message, with the full dotted path and a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel

from oumi_megatron.config.errors import ConfigError, unknown_key_error


def is_structured(tp: Any) -> bool:
    """True for dataclass and pydantic model classes (types with a fixed key set)."""
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, BaseModel))


@cache
def field_types(schema: type) -> dict[str, Any]:
    """Field name -> annotation of a dataclass or pydantic model class."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return {name: info.annotation for name, info in schema.model_fields.items()}
    hints = typing.get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}


def field_default(owner: Any, name: str) -> Any:
    """Default value of field ``name`` of a dataclass or pydantic instance ``owner``."""
    if isinstance(owner, BaseModel):
        return type(owner).model_fields[name].get_default(call_default_factory=True)
    spec = next(f for f in dataclasses.fields(owner) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def union_arms(tp: Any) -> tuple[Any, ...]:
    """The alternatives of ``X | Y`` / ``Optional[X]``, or ``(tp,)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def child_path(path: str, key: str | int) -> str:
    """``a.b`` + ``c`` -> ``a.b.c``; list indices render as ``a.b[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _unknown_keys(value: Any, tp: Any, path: str) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for arm in union_arms(tp):
        origin = typing.get_origin(arm)
        if is_structured(arm) and isinstance(value, Mapping):
            fields = field_types(arm)
            for key, child in value.items():
                if key not in fields:
                    errors.append(unknown_key_error(child_path(path, str(key)), fields))
                else:
                    errors.extend(_unknown_keys(child, fields[key], child_path(path, key)))
            return errors
        if origin is list and isinstance(value, list):
            (item_tp,) = typing.get_args(arm) or (Any,)
            for i, item in enumerate(value):
                errors.extend(_unknown_keys(item, item_tp, child_path(path, i)))
            return errors
        if origin is dict and isinstance(value, Mapping):
            _, item_tp = typing.get_args(arm) or (str, Any)
            for key, item in value.items():
                errors.extend(_unknown_keys(item, item_tp, child_path(path, str(key))))
            return errors
    return errors  # Free-form (Any, primitives): nothing to check.


def check_unknown_keys(data: Mapping[str, Any], schema: type) -> None:
    """Raises one ``ConfigError`` listing every key of ``data`` that ``schema`` lacks."""
    errors = _unknown_keys(data, schema, "")
    if errors:
        raise ConfigError("\n".join(str(e) for e in errors))
